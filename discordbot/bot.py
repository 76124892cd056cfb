"""The Discord side of the bot: events, message commands and slash commands. Each handler
turns Discord's objects into a jobs.Request, calls one service, and shows the result;
the decisions are made in jobs.py and services.py."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import discord
from asgiref.sync import sync_to_async
from discord import app_commands
from discord.ext import commands
from django.conf import settings

from accounts import money
from discordbot import jobs, selectors, services
from discordbot.errors import BotError
from discordbot.models import DiscordCommand
from discordbot.split import LIMIT, split_message

log = logging.getLogger(__name__)
# discord.py warns at every start that voice needs PyNaCl; the bot has no voice.
discord.VoiceClient.warn_nacl = False

PREFIX = "!"
THINKING = "Thinking…"
# Discord allows about five edits of a message in five seconds before it answers 429;
# one edit per 1.2 s per message stays under that with room for the final edit.
EDIT_INTERVAL_S = 1.2
HISTORY_SHOWN = 10
SORRY = "Something went wrong on our side; nothing was charged for it."


def _sorry(what: str, *args, exc_info) -> str:
    """Log a crash under a fresh reference and give the apology that names it: the
    channel hears neither the exception nor its text, only what to quote to the admins."""
    reference = uuid.uuid4().hex[:12]
    log.error(f"{what} (reference %s)", *args, reference, exc_info=exc_info)
    return f"{SORRY} Reference: `{reference}`."

HELP = f"""**Inkmarket bot**: answers from the marketplace's models, billed to this server.
`{PREFIX}ask QUESTION`: an answer, streamed in as it is written
`{PREFIX}code REQUEST`: code, each block fenced with its language, then how it works
`{PREFIX}summarize`: as a reply to a message, its key points
`{PREFIX}image PROMPT`: an image (for the roles and users an admin allows)
`{PREFIX}history`: your last {HISTORY_SHOWN} requests
Mention me to talk; I remember the last few messages of the channel.
Slash commands: `/ask` (optionally another model, or privately), `/imagine`, and `/settings` \
for admins (who may manage the server).
Each person may make {{limit}} requests an hour. The cost of each answer is shown under it."""


class _Editable(Protocol):
    async def edit(self, *, content: str) -> Any: ...

    async def delete(self) -> Any: ...


class LiveReply:
    """An answer's messages while it streams. The first (already showing "Thinking…") is
    edited with the text so far at most once per EDIT_INTERVAL_S; text past Discord's
    2,000 characters goes on in further messages, split where split_message says."""

    def __init__(self, first: _Editable, send_more: Callable[[str], Awaitable[_Editable]], *,
                 interval: float = EDIT_INTERVAL_S, placeholder: str = THINKING):
        self.messages: list[_Editable] = [first]
        self.shown: list[str] = [placeholder]
        self.send_more = send_more
        self.interval = interval
        self.placeholder = placeholder
        self._latest = ""
        self._changed = asyncio.Event()
        self._closed = False
        self._last = float("-inf")
        self._pump: asyncio.Task | None = None

    async def update(self, text: str) -> None:
        """Called for each token; never waits for Discord, so the stream is not held up."""
        self._latest = text
        self._changed.set()
        if self._pump is None:
            self._pump = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            if self._closed:
                return
            self._changed.clear()
            try:
                await self._show(split_message(self._latest) or [self.placeholder])
            except discord.HTTPException:
                log.warning("an edit of a streaming answer failed", exc_info=True)

    async def _show(self, chunks: list[str]) -> None:
        wait = self._last + self.interval - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)
        for i, chunk in enumerate(chunks):
            if i < len(self.messages):
                if self.shown[i] != chunk:
                    await self.messages[i].edit(content=chunk)
                    self.shown[i] = chunk
            else:
                self.messages.append(await self.send_more(chunk))
                self.shown.append(chunk)
        while len(self.messages) > len(chunks):
            await self.messages.pop().delete()
            self.shown.pop()
        self._last = asyncio.get_running_loop().time()

    async def _stop(self) -> None:
        self._closed = True
        self._changed.set()
        if self._pump is not None:
            await self._pump

    async def finish(self, chunks: list[str]) -> None:
        await self._stop()
        await self._show(chunks)

    async def fail(self, message: str) -> None:
        """Show why there is no answer, in the first message, keeping any text so far."""
        await self._stop()
        await self._show(split_message(f"{self._latest.strip()}\n\n⚠️ {message}"))


def cost_line(answer: jobs.Answer) -> str:
    cost = "free" if answer.cost_wei == 0 else money.coin_text(answer.cost_wei)
    return f"-# {cost} · {answer.tokens} tokens · {answer.model}"


def cost_emoji(answer: jobs.Answer) -> str:
    return "🆓" if answer.cost_wei == 0 else "🪙"


def final_chunks(answer: jobs.Answer) -> list[str]:
    """The shaped answer as messages, each part on its own, with the cost under the last."""
    chunks = [chunk for part in answer.parts for chunk in split_message(part)]
    chunks = chunks or ["(The model returned no text.)"]
    footer = cost_line(answer)
    if chunks and len(chunks[-1]) + 1 + len(footer) <= LIMIT:
        chunks[-1] += "\n" + footer
    else:
        chunks.append(footer)
    return chunks


class ChannelContext:
    """The last few turns of each channel's conversation with the bot, in this process:
    enough for a follow-up question to make sense, and gone on restart by design."""

    def __init__(self, turns: int):
        self._turns: dict[int, deque[tuple[str, str]]] = defaultdict(
            lambda: deque(maxlen=max(1, 2 * turns)))

    def turns(self, channel_id: int) -> tuple[tuple[str, str], ...]:
        return tuple(self._turns[channel_id])

    def add(self, channel_id: int, speaker: str, text: str) -> None:
        self._turns[channel_id].append((speaker, text[:1000]))


class _OriginalResponse:
    """An interaction's original response, edited like a message."""

    def __init__(self, interaction: discord.Interaction):
        self.interaction = interaction
        self.message: discord.InteractionMessage | None = None

    async def edit(self, *, content: str) -> None:
        self.message = await self.interaction.edit_original_response(content=content)

    async def delete(self) -> None:
        await self.interaction.delete_original_response()


async def _run_into(reply: LiveReply, request, *, label: str) -> jobs.Answer | None:
    """Run the job, streaming into `reply`; a refusal or a crash is said in that same
    reply (never left at "Thinking…") and gives None."""
    try:
        answer = await jobs.run(request, on_text=reply.update)
    except BotError as exc:
        log.info("discord %s refused (%s) for user %s: %s", label, exc.code,
                 request.user_id, exc.message)
        await reply.fail(exc.message)
        return None
    except Exception as exc:
        await reply.fail(_sorry("discord %s for user %s crashed", label, request.user_id,
                                exc_info=exc))
        return None
    await reply.finish(final_chunks(answer))
    return answer


def _request(*, guild: discord.Guild, channel, user: discord.abc.User, command: str,
             prompt: str, model: str | None = None,
             context: tuple[tuple[str, str], ...] = ()) -> jobs.Request:
    roles = tuple(role.id for role in getattr(user, "roles", ()))
    return jobs.Request(guild_id=guild.id, guild_name=guild.name,
                        channel_id=channel.id if channel is not None else 0,
                        # a thread is allowed where its channel is
                        parent_channel_id=getattr(channel, "parent_id", None),
                        user_id=user.id, user_name=user.display_name, command=command,
                        prompt=prompt, model=model, role_ids=roles, context=context)


async def _say(message: discord.Message, text: str) -> None:
    """A short answer to a message; a failure to send is logged, never raised."""
    try:
        await message.reply(text, mention_author=False)
    except discord.HTTPException:
        log.warning("could not answer message %s", message.id, exc_info=True)


def _message_text(message: discord.Message) -> str:
    parts = [message.content or ""]
    parts += [embed.description or "" for embed in message.embeds]
    return "\n\n".join(p for p in parts if p.strip()).strip()


class BotCommands(commands.Cog):
    def __init__(self, bot: InkBot):
        self.bot = bot

    # ---- The one path every answer takes ---------------------------------------------

    async def answer_message(self, message: discord.Message, *, command: str, prompt: str,
                             context: tuple[tuple[str, str], ...] = ()) -> jobs.Answer | None:
        if message.guild is None:
            await _say(message, "I answer in servers, where the server's account pays: "
                                "invite me to one.")
            return None
        first = await message.reply(THINKING, mention_author=False)
        reply = LiveReply(first, message.channel.send)
        request = _request(guild=message.guild, channel=message.channel,
                           user=message.author, command=command, prompt=prompt,
                           context=context)
        answer = await _run_into(reply, request, label=command)
        if answer is not None:
            await first.add_reaction(cost_emoji(answer))
        return answer

    # ---- Message commands -----------------------------------------------------------

    @commands.command(name="ask")
    async def ask(self, ctx: commands.Context, *, question: str = "") -> None:
        if not question.strip():
            await _say(ctx.message, f"Ask me something: `{PREFIX}ask QUESTION`.")
            return
        await self.answer_message(ctx.message, command=DiscordCommand.ASK, prompt=question)

    @commands.command(name="code")
    async def code(self, ctx: commands.Context, *, request: str = "") -> None:
        if not request.strip():
            await _say(ctx.message, f"Say what code to write: `{PREFIX}code REQUEST`.")
            return
        await self.answer_message(ctx.message, command=DiscordCommand.CODE, prompt=request)

    @commands.command(name="summarize", aliases=["summarise"])
    async def summarize(self, ctx: commands.Context) -> None:
        try:
            original = await self._referenced(ctx.message)
        except BotError as exc:
            await _say(ctx.message, exc.message)
            return
        text = _message_text(original)
        if not text:
            await _say(ctx.message, "That message has no text to summarize.")
            return
        await self.answer_message(ctx.message, command=DiscordCommand.SUMMARIZE, prompt=text)

    async def _referenced(self, message: discord.Message) -> discord.Message:
        reference = message.reference
        if reference is None or reference.message_id is None:
            raise BotError("NOT_A_REPLY", f"Use `{PREFIX}summarize` as a reply to the message "
                                          "you want summarized.")
        if isinstance(reference.resolved, discord.Message):
            return reference.resolved
        if isinstance(reference.resolved, discord.DeletedReferencedMessage):
            raise BotError("GONE", "That message was deleted, so there is nothing to summarize.")
        if reference.cached_message is not None:
            return reference.cached_message
        try:
            return await message.channel.fetch_message(reference.message_id)
        except discord.NotFound:
            raise BotError("GONE", "I can't find that message any more.") from None
        except discord.Forbidden:
            raise BotError("GONE", "I may not read that message.") from None

    @commands.command(name="image")
    async def image(self, ctx: commands.Context, *, prompt: str = "") -> None:
        if not prompt.strip():
            await _say(ctx.message, f"Describe the image: `{PREFIX}image PROMPT`.")
            return
        await self.answer_message(ctx.message, command=DiscordCommand.IMAGE, prompt=prompt)

    @commands.command(name="help")
    async def help(self, ctx: commands.Context) -> None:
        await ctx.reply(HELP.format(limit=settings.DISCORD_REQUESTS_PER_HOUR),
                        mention_author=False)

    @commands.command(name="history")
    async def history(self, ctx: commands.Context) -> None:
        rows = await sync_to_async(selectors.history_for_user)(user_id=ctx.author.id,
                                                               limit=HISTORY_SHOWN)
        if not rows:
            await _say(ctx.message, "You have no requests yet.")
            return
        lines = [f"Your last {len(rows)} requests:"]
        for job in rows:
            cost = "free" if job.cost_wei == 0 else money.coin_text(job.cost_wei)
            prompt = " ".join(job.prompt.split())
            prompt = discord.utils.escape_markdown(prompt[:60] + ("…" if len(prompt) > 60 else ""))
            lines.append(f"`{job.created:%Y-%m-%d %H:%M}` {job.command} · "
                         f"{job.get_status_display().lower()} · {cost} · {prompt}")
        for chunk in split_message("\n".join(lines)):
            await ctx.reply(chunk, mention_author=False)

    # ---- A mention: a conversation -------------------------------------------------

    async def chat(self, message: discord.Message) -> None:
        me = self.bot.user
        prompt = re.sub(rf"<@!?{me.id}>", "", message.content).strip() if me else message.content
        if not prompt:
            await _say(message, f"Hello! Ask me anything, or see `{PREFIX}help`.")
            return
        context = self.bot.context.turns(message.channel.id)
        answer = await self.answer_message(message, command=DiscordCommand.CHAT,
                                           prompt=prompt, context=context)
        if answer is not None:
            self.bot.context.add(message.channel.id, message.author.display_name, prompt)
            self.bot.context.add(message.channel.id, "Assistant", answer.text.strip())

    # ---- Slash commands ------------------------------------------------------------

    async def answer_interaction(self, interaction: discord.Interaction, *, command: str,
                                 prompt: str, model: str | None = None,
                                 private: bool = False) -> jobs.Answer | None:
        if interaction.guild is None:
            await interaction.response.send_message(
                "I answer in servers, where the server's account pays.", ephemeral=True)
            return None
        await interaction.response.defer(thinking=True, ephemeral=private)
        first = _OriginalResponse(interaction)

        async def send_more(chunk: str):
            return await interaction.followup.send(chunk, ephemeral=private, wait=True)

        reply = LiveReply(first, send_more)
        request = _request(guild=interaction.guild, channel=interaction.channel,
                           user=interaction.user, command=command, prompt=prompt,
                           model=model)
        answer = await _run_into(reply, request, label=f"/{command}")
        if answer is not None and not private and first.message is not None:
            await first.message.add_reaction(cost_emoji(answer))
        return answer

    @app_commands.command(name="ask", description="Ask the marketplace's models a question")
    @app_commands.describe(prompt="Your question", model="A model id other than the server's",
                           private="Only you see the answer")
    async def slash_ask(self, interaction: discord.Interaction, prompt: str,
                        model: str | None = None, private: bool = False) -> None:
        await self.answer_interaction(interaction, command=DiscordCommand.ASK, prompt=prompt,
                                      model=model, private=private)

    @app_commands.command(name="imagine", description="Make an image from a description")
    @app_commands.describe(prompt="What the image shows")
    async def slash_imagine(self, interaction: discord.Interaction, prompt: str) -> None:
        await self.answer_interaction(interaction, command=DiscordCommand.IMAGE, prompt=prompt)

    @app_commands.command(name="settings", description="View or change this server's settings")
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.checks.has_permissions(manage_guild=True)
    @app_commands.describe(
        channels="Channels I answer in (mentions or ids; 'all' for every channel)",
        ask_model="Model for !ask and /ask", code_model="Model for !code",
        summarize_model="Model for !summarize", chat_model="Model for answers to mentions",
        image_model="Model for !image and /imagine",
        image_roles="Roles that may make images (mentions or ids; 'none')",
        image_users="Users who may make images (mentions or ids; 'none')",
        daily_cap_wei="Most the server may spend a day: wei, or with its unit ('0.01 ETH'; "
                      "'none': no cap)",
        max_price_per_token="Most a host may ask per token: wei, or with its unit ('2 gwei'); "
                            "dearer hosts are not used ('none': no limit)")
    async def slash_settings(self, interaction: discord.Interaction,
                             channels: str | None = None, ask_model: str | None = None,
                             code_model: str | None = None,
                             summarize_model: str | None = None,
                             chat_model: str | None = None, image_model: str | None = None,
                             image_roles: str | None = None, image_users: str | None = None,
                             daily_cap_wei: str | None = None,
                             max_price_per_token: str | None = None) -> None:
        changes = {"channels": channels, "ask_model": ask_model, "code_model": code_model,
                   "summarize_model": summarize_model, "chat_model": chat_model,
                   "image_model": image_model, "image_roles": image_roles,
                   "image_users": image_users, "daily_cap_wei": daily_cap_wei,
                   "max_price_per_token": max_price_per_token}
        text = await settings_command(guild=interaction.guild, changes=changes)
        await interaction.response.send_message(text, ephemeral=True)


async def settings_command(*, guild: discord.Guild, changes: dict[str, str | None]) -> str:
    """What /settings answers: the server's settings after applying any changes, or why
    the changes were refused (then nothing changed)."""
    server = await sync_to_async(services.server_get_or_create)(guild_id=guild.id,
                                                                name=guild.name)
    try:
        said = await sync_to_async(services.server_settings_change)(server=server,
                                                                    changes=changes)
    except BotError as exc:
        return f"Nothing changed: {exc.message}."
    view = await sync_to_async(settings_view)(server)
    return ("Changed " + "; ".join(said) + ".\n\n" + view) if said else view


def settings_view(server) -> str:
    channels = ", ".join(f"<#{c}>" for c in server.allowed_channel_ids) or "all"
    roles = ", ".join(f"<@&{r}>" for r in server.image_role_ids) or "none"
    users = ", ".join(f"<@{u}>" for u in server.image_user_ids) or "none"
    cap = "none" if server.daily_cap_wei is None else money.coin_text(server.daily_cap_wei)
    ceiling = "none" if server.max_price_per_token_wei is None \
        else money.price_text(server.max_price_per_token_wei)
    spent = selectors.server_committed_today(server=server)
    payer = server.billing_user.get_username() if server.billing_user else \
        "none yet (set in Django admin)"
    return "\n".join([
        f"**Settings of {discord.utils.escape_markdown(server.name or str(server.guild_id))}**",
        f"Channels: {channels}",
        f"Models: ask `{server.ask_model}`, code `{server.code_model}`, summarize "
        f"`{server.summarize_model}`, chat `{server.chat_model}`, image `{server.image_model}`",
        f"May make images: roles {roles}; users {users}",
        f"Daily cap: {cap} ({money.coin_text(spent)} used today)",
        f"Max price per token: {ceiling}",
        f"Paid by: {payer}",
        f"Requests per person: {settings.DISCORD_REQUESTS_PER_HOUR} an hour",
    ])


class _Tree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction,
                       error: app_commands.AppCommandError) -> None:
        if isinstance(error, app_commands.MissingPermissions):
            text = "Only members who may manage this server can use this command."
        elif isinstance(error, app_commands.NoPrivateMessage):
            text = "This command works in a server."
        elif isinstance(error, app_commands.CheckFailure):
            text = "You may not use this command here."
        else:
            text = _sorry("slash command %s failed", getattr(interaction.command, "name", "?"),
                          exc_info=error)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not answer interaction %s", interaction.id, exc_info=True)


class InkBot(commands.Bot):
    def __init__(self, *, intents: discord.Intents | None = None, **options):
        if intents is None:
            intents = discord.Intents.default()
            intents.message_content = True  # commands are read from messages' text
        super().__init__(command_prefix=PREFIX, intents=intents, help_command=None,
                         tree_cls=_Tree,
                         # A model may write "@everyone": nothing the bot posts pings anyone.
                         allowed_mentions=discord.AllowedMentions.none(), **options)
        self.context = ChannelContext(settings.DISCORD_CHAT_TURNS)

    async def setup_hook(self) -> None:
        await self.add_cog(BotCommands(self))
        # Registered on every start, so a new or changed slash command reaches Discord.
        synced = await self.tree.sync()
        log.info("slash commands registered: %s", ", ".join(c.name for c in synced))

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s, in %d servers", self.user, len(self.guilds))

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await sync_to_async(services.server_get_or_create)(guild_id=guild.id, name=guild.name)

    async def on_message(self, message: discord.Message) -> None:
        # The one guard for everything a message can start: whatever goes wrong, the bot
        # says so and goes on to the next message.
        try:
            if message.author.bot:
                return
            cog = self.get_cog("BotCommands")
            content = message.content or ""
            if (self.user is not None and self.user in message.mentions
                    and not content.startswith(PREFIX) and cog is not None):
                await cog.chat(message)
            else:
                await self.process_commands(message)
        except Exception as exc:
            await _say(message, _sorry("message %s could not be handled", message.id,
                                       exc_info=exc))

    async def on_command_error(self, ctx: commands.Context,
                               error: commands.CommandError) -> None:
        if isinstance(error, commands.CommandNotFound):
            text = f"I don't know `{PREFIX}{ctx.invoked_with}`: see `{PREFIX}help`."
        elif isinstance(error, commands.UserInputError):
            text = f"I couldn't read that ({error}). See `{PREFIX}help`."
        elif isinstance(error, commands.CheckFailure):
            text = "You may not use that command here."
        else:
            original = getattr(error, "original", error)
            text = _sorry("command %s failed", ctx.command, exc_info=original)
        await _say(ctx.message, text)
