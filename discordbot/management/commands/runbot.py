"""python manage.py runbot: the Discord bot, until Ctrl-C."""

from __future__ import annotations

import aiohttp
import discord
from django.core.management.base import BaseCommand, CommandError

from discordbot.bot import InkBot
from discordbot.token import TokenError, read_token


class Command(BaseCommand):
    help = "Run the Discord bot (token from the file DISCORD_TOKEN_FILE names)."

    def handle(self, *args, **options):
        try:
            token = read_token()
        except TokenError as exc:
            raise CommandError(str(exc)) from None
        try:
            # Django's LOGGING already routes discord.py's loggers; no handler of its own.
            InkBot().run(token, log_handler=None)
        except discord.LoginFailure:
            raise CommandError("Discord refused the token in DISCORD_TOKEN_FILE: reset it in "
                               "the developer portal and write the new one there.") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise CommandError(f"Discord cannot be reached: {exc}") from None
        except discord.PrivilegedIntentsRequired:
            raise CommandError("Discord refused the Message Content intent: turn it on under "
                               "Bot → Privileged Gateway Intents in the developer portal."
                               ) from None
