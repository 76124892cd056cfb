"""The bot's token, from the file named by settings.DISCORD_TOKEN_FILE and nowhere else."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


class TokenError(Exception):
    """The token cannot be had; the message says what to do."""


def read_token() -> str:
    path = settings.DISCORD_TOKEN_FILE
    if not path:
        raise TokenError("DISCORD_TOKEN_FILE is not set: put the bot's token in a file "
                         "readable only by this user and set DISCORD_TOKEN_FILE to its path "
                         "(see docs/discord.md).")
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise TokenError(f"DISCORD_TOKEN_FILE={path!r} cannot be read: "
                         f"{exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise TokenError(f"DISCORD_TOKEN_FILE={path!r} is not a text file.") from None
    if not token:
        raise TokenError(f"DISCORD_TOKEN_FILE={path!r} is empty: it should hold the token "
                         "from the Discord developer portal (Bot → Reset Token).")
    if any(c.isspace() for c in token):
        raise TokenError(f"DISCORD_TOKEN_FILE={path!r} holds more than one word: it should "
                         "hold the token alone.")
    return token
