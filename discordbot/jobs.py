"""One bot request, start to end, with nothing of Discord in it: the checks (channel,
permission, the user's hourly limit), a price from the hosts serving the model, the
writer's prompt templates, the reservation, the job through the marketplace client with
the text so far handed to `on_text` as it streams, post-processing, and settlement.

Every refusal or failure is a BotError whose message is what the channel is told; a job
that fails after its reservation gives it all back, and is logged with its id.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from accounts import money
from accounts.errors import InsufficientFunds
from content.postprocess import process_code, process_summary
from content.profiles import profile_for
from content.prompts import PromptSpec, build_prompt
from discordbot import services
from discordbot.errors import BotError
from discordbot.models import DiscordCommand
from discordbot.split import code_block
from marketplace.client.errors import public_message
from marketplace.services import ClientError, JobSpec, price_quote, run_job
from observability.logging import job_id_var

log = logging.getLogger(__name__)

TextCallback = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Request:
    guild_id: int
    guild_name: str
    channel_id: int
    user_id: int
    user_name: str
    command: str  # a DiscordCommand value
    prompt: str
    model: str | None = None  # None: the server's default for the command
    role_ids: tuple[int, ...] = ()
    context: tuple[tuple[str, str], ...] = ()  # earlier (speaker, text) turns, for a chat
    parent_channel_id: int | None = None  # the channel a thread is in


@dataclass(frozen=True)
class Answer:
    job_id: uuid.UUID
    parts: list[str]  # what to post, in order; the caller splits each at Discord's limit
    text: str  # the model's text as it came
    tokens: int
    cost_wei: int
    model: str
    host: str


@dataclass(frozen=True)
class _Prompt:
    text: str
    max_tokens: int
    temperature: float
    spec: PromptSpec | None = None  # a content type's template: its echoes are dropped


def _ask_prompt(question: str) -> str:
    return (f"{question.strip()}\n\nAnswer clearly and briefly. Put any code in a fenced "
            "code block with its language.")


def _chat_prompt(request: Request) -> str:
    lines = [f"{speaker}: {text}" for speaker, text in request.context]
    lines.append(f"{request.user_name}: {request.prompt.strip()}")
    return ("You are a helpful assistant in a Discord channel. The conversation so far:\n\n"
            + "\n".join(lines) + "\n\nWrite your reply to the last message.")


def chat_session(request: Request) -> str | None:
    """A mention conversation's marketplace session: one per channel of a server (a thread
    is a channel of its own), as the conversation's turns are kept (bot.ChannelContext).
    Each prompt carries the turns itself, so the session only prefers the host that
    answered the channel's last turn; other commands are one-offs, with none."""
    if request.command != DiscordCommand.CHAT:
        return None
    return f"discord:{request.guild_id}:{request.channel_id}"


def _prompt_for(request: Request, model: str) -> _Prompt:
    ask_tokens = settings.DISCORD_ASK_MAX_TOKENS
    if request.command == DiscordCommand.CODE:
        chosen = profile_for("code", "short", model=model)
        spec = build_prompt("code", request.prompt, style="technical", length="short")
        return _Prompt(spec.text, chosen.max_tokens, chosen.temperature, spec)
    if request.command == DiscordCommand.SUMMARIZE:
        chosen = profile_for("summary", "short", model=model)
        spec = build_prompt("summary", request.prompt, style="professional", length="short")
        return _Prompt(spec.text, chosen.max_tokens, chosen.temperature, spec)
    if request.command == DiscordCommand.CHAT:
        return _Prompt(_chat_prompt(request), ask_tokens, 0.7)
    if request.command == DiscordCommand.IMAGE:
        return _Prompt(request.prompt.strip(), ask_tokens, 0.7)
    return _Prompt(_ask_prompt(request.prompt), ask_tokens, 0.7)


def shape(command: str, text: str) -> list[str]:
    """The answer as messages: code as one fenced block per block, with the language
    detected, then the explanation; a summary as its key points; anything else as it is."""
    if command == DiscordCommand.CODE:
        processed = process_code(text)
        parts = [code_block(block["code"].split("\n"), block["language"])
                 for block in processed["blocks"]]
        if processed["explanation"]:
            parts.append(processed["explanation"])
        return parts or [text.strip()]
    if command == DiscordCommand.SUMMARIZE:
        points = process_summary(text)["points"]
        return ["\n".join(f"- {p}" for p in points)] if points else [text.strip()]
    return [text.strip()]


def _over_limit(quota: services.Quota) -> BotError:
    minutes = max(1, -(-quota.reset_s // 60))
    return BotError("OVER_LIMIT",
                    f"You have used your {quota.limit} requests for this hour; try again in "
                    f"{minutes} minute{'s' if minutes != 1 else ''}.")


async def check(request: Request):
    """The checks that need no host: the server, its channel, the user's permission and
    hourly limit. Returns the server's settings."""
    await sync_to_async(close_old_connections)()  # a long-lived process: drop dead ones
    server = await sync_to_async(services.server_get_or_create)(guild_id=request.guild_id,
                                                                name=request.guild_name)
    if not services.channel_allowed(server, channel_id=request.channel_id,
                                    parent_id=request.parent_channel_id):
        where = ", ".join(f"<#{c}>" for c in server.allowed_channel_ids)
        raise BotError("CHANNEL_NOT_ALLOWED", f"I answer only in {where} on this server.")
    if request.command == DiscordCommand.IMAGE and not services.image_permitted(
            server, user_id=request.user_id, role_ids=list(request.role_ids)):
        raise BotError("NOT_PERMITTED",
                       "You may not make images on this server: an admin can allow your role "
                       "or you with /settings.")
    if server.billing_user_id is None:
        raise BotError("NO_BILLING_ACCOUNT",
                       "This server has no billing account yet: an admin of the bot sets one "
                       "in Django admin (Discord servers).")
    quota = await sync_to_async(services.quota_hit)(user_id=request.user_id)
    if not quota.allowed:
        raise _over_limit(quota)
    return server


async def run(request: Request, *, on_text: TextCallback | None = None) -> Answer:
    """Answer the request through the marketplace; BotError when it cannot be."""
    server = await check(request)
    model = request.model or server.model_for(request.command)
    quote = await price_quote(model)
    if quote is None:
        if request.command == DiscordCommand.IMAGE:
            raise BotError("NO_IMAGE_MODEL",
                           f"No host on the network serves an image model ({model}) right "
                           "now, so I can't make images. Try again later.")
        raise BotError("NO_HOSTS", f"No host on the network serves {model} right now. "
                                   "Try again in a little while.")
    # The dearest host a job would use: never an outlier, never above the server's
    # ceiling (docs/trust.md, "Prices").
    ceiling = server.max_price_per_token_wei
    cap = quote.reserve_price_wei(None if ceiling is None else int(ceiling))
    if cap is None:
        raise BotError("NO_HOSTS_WITHIN_PRICE",
                       f"No host serves {model} at {money.price_text(ceiling)} per token or "
                       f"less (the cheapest asks {money.price_text(quote.min_price_wei)}). An "
                       "admin can raise the limit "
                       "with /settings max_price_per_token.")
    prompt = await sync_to_async(_prompt_for)(request, model)
    try:
        job = await sync_to_async(services.job_reserve)(
            server=server, user_id=request.user_id, user_name=request.user_name,
            channel_id=request.channel_id, command=request.command, prompt=request.prompt,
            full_prompt=prompt.text, model=model, max_tokens=prompt.max_tokens,
            price_cap_wei=cap)
    except InsufficientFunds as exc:
        raise BotError("INSUFFICIENT_FUNDS",
                       f"This server's account can't cover this request: it could cost up to "
                       f"{money.coin_detail(exc.required_wei)} and "
                       f"{money.coin_detail(exc.available_wei)} is left. An "
                       "admin can top it up.") from None
    token = job_id_var.set(str(job.id))
    try:
        return await _run_job(request, job, prompt, on_text)
    finally:
        job_id_var.reset(token)


async def _run_job(request: Request, job, prompt: _Prompt, on_text: TextCallback | None
                   ) -> Answer:
    pieces: list[str] = []

    async def on_token(index: int, text: str) -> None:
        del pieces[index:]  # a failover resumes from the text delivered so far
        pieces.append(text)
        if on_text is not None:
            await on_text("".join(pieces))

    async def on_state(state: str, detail: dict) -> None:
        if state == "REWOUND":
            del pieces[detail["index"]:]

    spec = JobSpec(model=job.model, prompt=prompt.text, max_tokens=prompt.max_tokens,
                   temperature=prompt.temperature, owner_id=job.server.billing_user_id,
                   max_price_per_token_wei=int(job.price_cap_wei),
                   session=chat_session(request))
    try:
        outcome = await run_job(spec, job_id=job.id, on_token=on_token, on_state=on_state)
    except ClientError as exc:
        await sync_to_async(services.job_fail)(job_id=job.id, code=exc.code,
                                               message=exc.message, text="".join(pieces))
        log.warning("discord job %s failed: %s", job.id, exc)
        if exc.code == "NO_HOSTS_AVAILABLE":
            raise BotError("NO_HOSTS", f"No host on the network could take this job "
                                       f"(job {job.id}). Try again in a little while.",
                           job_id=job.id) from None
        # The code's fixed message: exc.message may hold a host's or the chain's words.
        raise BotError("JOB_FAILED", f"The job failed ({exc.code}): "
                                     f"{public_message(exc.code)}. Nothing was charged. "
                                     f"Job id: {job.id}.", job_id=job.id) from None
    except asyncio.CancelledError:
        await sync_to_async(services.job_fail)(job_id=job.id, code="CANCELLED",
                                               message="the bot stopped", text="".join(pieces))
        raise
    except Exception as exc:
        log.exception("discord job %s crashed", job.id)
        await sync_to_async(services.job_fail)(job_id=job.id, code="INTERNAL",
                                               message=str(exc)[:500], text="".join(pieces))
        raise BotError("INTERNAL", f"Something went wrong on our side; nothing was charged. "
                                   f"Job id: {job.id}.", job_id=job.id) from None
    text = prompt.spec.clean(outcome.text) if prompt.spec is not None else outcome.text
    parts = shape(request.command, text)  # before billing: a charge means an answer
    price = outcome.cost_wei // outcome.tokens if outcome.tokens else 0
    fee_bps = 0
    if outcome.tokens:
        from marketplace.wallet import platform_chain

        fee_bps = await (await platform_chain()).fee_bps()
    try:
        done = await sync_to_async(services.job_settle)(
            job_id=job.id, node_price_per_token_wei=price, tokens=outcome.tokens,
            protocol_fee_bps=fee_bps, text=outcome.text, host=outcome.host)
    except Exception:
        # The reservation stays held; the stale-reservation sweep gives it back.
        log.exception("discord job %s: settlement failed", job.id)
        raise BotError("INTERNAL", f"The answer arrived but could not be billed; nothing was "
                                   f"charged. Job id: {job.id}.", job_id=job.id) from None
    log.info("discord job %s done: %s tokens, %s wei", job.id, outcome.tokens, done.cost_wei)
    return Answer(job_id=job.id, parts=parts, text=outcome.text,
                  tokens=outcome.tokens, cost_wei=done.cost_wei, model=job.model,
                  host=outcome.host)
