"""Writes of the Discord bot: its servers and their settings, the per-user request limit,
the daily cap, billing through the accounts ledger, and the jobs kept for !history.

Billing is the writer's: the worst case (max tokens at the dearest host's price, with the
paying account's tier) is reserved before the job, settled for the tokens delivered with
the chain's protocol fee, or released when nothing was delivered. The daily cap is counted
in the same transactions: the worst case is committed against the day at reservation and
brought down to the charge at settlement, under the day's row lock, so two jobs at once
cannot both pass a cap that only one fits under.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from limits import RateLimitItemPerHour

from accounts import money
from accounts.errors import ReservationClosed
from accounts.models import Reservation, ReservationState
from accounts.ratelimit import RateLimit, window_clear, window_hit
from accounts.services import (
    account_get_or_create,
    balance_reserve,
    reservation_release,
    reservation_settle,
)
from accounts.tiers import price_for, settlement_for
from content.models import Status
from discordbot.errors import BotError
from discordbot.models import DiscordDailySpend, DiscordJob, DiscordServer
from marketplace.services import price_ceiling_parse

log = logging.getLogger(__name__)


# ---- Servers --------------------------------------------------------------------------


def server_get_or_create(*, guild_id: int, name: str = "") -> DiscordServer:
    """The server's settings, made with the defaults the first time the bot sees it."""
    server, created = DiscordServer.objects.get_or_create(guild_id=guild_id,
                                                          defaults={"name": name[:100]})
    if not created and name and server.name != name[:100]:
        DiscordServer.objects.filter(pk=server.pk).update(name=name[:100])
        server.name = name[:100]
    return server


_ID = re.compile(r"<[@#][!&]?(\d{15,21})>|\b(\d{15,21})\b")
_MODEL = re.compile(r"[\w.:/+-]{1,100}")
SETTABLE = ("channels", "ask_model", "code_model", "summarize_model", "chat_model",
            "image_model", "image_roles", "image_users", "daily_cap_wei", "max_price_per_token")


def parse_ids(raw: str) -> list[int]:
    """Discord ids from mentions (<#1…>, <@&1…>, <@1…>) or bare ids, in order, once each;
    'all', 'none' or blank is the empty list. Anything else is an error."""
    text = raw.strip()
    if text.lower() in {"", "all", "none", "-"}:
        return []
    ids: list[int] = []
    leftover = _ID.sub(" ", text).replace(",", " ").strip()
    if leftover:
        raise BotError("INVALID_SETTING", f"{leftover.split()[0]!r} is not a mention or an id")
    for match in _ID.finditer(text):
        value = int(match.group(1) or match.group(2))
        if value not in ids:
            ids.append(value)
    return ids


@transaction.atomic
def server_settings_change(*, server: DiscordServer, changes: dict[str, str]) -> list[str]:
    """Apply /settings options (strings as typed); returns what changed, in words. Raises
    BotError INVALID_SETTING, changing nothing, when any value is malformed."""
    locked = DiscordServer.objects.select_for_update().get(pk=server.pk)
    said: list[str] = []
    for name, raw in changes.items():
        if raw is None:
            continue
        if name not in SETTABLE:
            raise BotError("INVALID_SETTING", f"there is no setting {name!r}")
        raw = str(raw).strip()
        if name == "channels":
            locked.allowed_channel_ids = parse_ids(raw)
            said.append("channels: " + (", ".join(f"<#{c}>" for c in locked.allowed_channel_ids)
                                        or "all"))
        elif name == "image_roles":
            locked.image_role_ids = parse_ids(raw)
            said.append("image roles: " + (", ".join(f"<@&{r}>" for r in locked.image_role_ids)
                                           or "none"))
        elif name == "image_users":
            locked.image_user_ids = parse_ids(raw)
            said.append("image users: " + (", ".join(f"<@{u}>" for u in locked.image_user_ids)
                                           or "none"))
        elif name == "daily_cap_wei":
            if raw.lower() in {"none", "off", "no cap", "-"}:
                locked.daily_cap_wei = None
            else:
                try:
                    locked.daily_cap_wei = money.parse(raw)
                except money.AmountError:
                    raise BotError("INVALID_SETTING", "the daily cap is an amount (in wei, or "
                                   f"'0.01 {money.symbol()}') or 'none', not {raw!r}") from None
            cap = locked.daily_cap_wei
            said.append("daily cap: " + ("none" if cap is None else money.coin_text(cap)))
        elif name == "max_price_per_token":
            if raw.lower() in {"none", "off", "no limit", "-"}:
                locked.max_price_per_token_wei = None
            else:
                try:
                    locked.max_price_per_token_wei = price_ceiling_parse(money.parse(raw))
                except ValueError:  # money.AmountError is one
                    raise BotError("INVALID_SETTING", "the max price per token is an amount "
                                   "(in wei, or '2 gwei'; at least 1 wei) or 'none', not "
                                   f"{raw!r}") from None
            ceiling = locked.max_price_per_token_wei
            said.append("max price per token: " + ("none" if ceiling is None
                                                   else money.price_text(ceiling)))
        else:
            if not _MODEL.fullmatch(raw):
                raise BotError("INVALID_SETTING", f"{raw!r} is not a model id")
            setattr(locked, name, raw)
            said.append(f"{name.replace('_', ' ')}: {raw}")
    if said:
        locked.save()
    server.refresh_from_db()
    return said


def image_permitted(server: DiscordServer, *, user_id: int, role_ids: list[int]) -> bool:
    """Whether this user may make images here: listed by id, or holding a listed role."""
    return (user_id in server.image_user_ids
            or bool(set(role_ids) & set(server.image_role_ids)))


def channel_allowed(server: DiscordServer, *, channel_id: int,
                    parent_id: int | None = None) -> bool:
    """Whether the bot answers here: every channel until some are listed, then those and
    the threads in them."""
    allowed = server.allowed_channel_ids
    return not allowed or channel_id in allowed or (parent_id is not None
                                                     and parent_id in allowed)


# ---- The per-user limit -----------------------------------------------------------------

# The gateway's store and strategy (accounts.ratelimit): a moving window in Redis, so
# "10 an hour" holds across restarts and processes and is never 20 across a window's edge.
Quota = RateLimit


def _item() -> RateLimitItemPerHour:
    return RateLimitItemPerHour(settings.DISCORD_REQUESTS_PER_HOUR)


def quota_hit(*, user_id: int) -> Quota:
    """Count one request of this Discord user against the hourly limit. An unreachable
    store lets the request through (logged): the cap and the balance still hold."""
    return window_hit(_item(), "discord-user", str(user_id))


def quota_clear(*, user_id: int) -> None:
    window_clear(_item(), "discord-user", str(user_id))


# ---- Billing and history --------------------------------------------------------------


def _spend_row(server: DiscordServer, day) -> DiscordDailySpend:
    DiscordDailySpend.objects.get_or_create(server=server, day=day)
    return DiscordDailySpend.objects.select_for_update().get(server=server, day=day)


@transaction.atomic
def job_reserve(*, server: DiscordServer, user_id: int, user_name: str, channel_id: int,
                command: str, prompt: str, full_prompt: str, model: str, max_tokens: int,
                price_cap_wei: int) -> DiscordJob:
    """A job with its worst case reserved from the server's account and committed against
    the server's day. Raises BotError (NO_BILLING_ACCOUNT, OVER_CAP) or InsufficientFunds,
    and then nothing is created."""
    server = DiscordServer.objects.select_related("billing_user").get(pk=server.pk)
    if server.billing_user is None:
        raise BotError("NO_BILLING_ACCOUNT",
                       "This server has no billing account yet: an admin of the bot sets one "
                       "in Django admin (Discord servers).")
    account = account_get_or_create(server.billing_user)
    worst = price_for(account.tier, price_cap_wei, max_tokens).charge_wei
    day = timezone.now().date()
    spend = _spend_row(server, day)
    if server.daily_cap_wei is not None and spend.committed_wei + worst > server.daily_cap_wei:
        raise BotError("OVER_CAP",
                       "This server has reached its daily spending cap "
                       f"({money.coin_detail(server.daily_cap_wei)}; "
                       f"{money.coin_detail(spend.committed_wei)} used today and this request "
                       f"could cost up to {money.coin_detail(worst)}). It resets at midnight "
                       "UTC.")
    job = DiscordJob.objects.create(
        server=server, user_id=user_id, user_name=user_name[:100], channel_id=channel_id,
        command=command, prompt=prompt, full_prompt=full_prompt, model=model,
        max_tokens=max_tokens, price_cap_wei=price_cap_wei, reserved_wei=worst,
        spend_day=day)
    # InsufficientFunds rolls the whole transaction back: no job, no spend.
    job.reservation = balance_reserve(account, amount_wei=worst, reference=f"discord:{job.id}")
    job.save(update_fields=["reservation"])
    spend.committed_wei += worst
    spend.save(update_fields=["committed_wei"])
    history_prune(user_id=user_id)
    return job


def _uncommit(job: DiscordJob, charged: int) -> None:
    spend = _spend_row(job.server, job.spend_day)
    spend.committed_wei = max(0, spend.committed_wei - (job.reserved_wei - charged))
    spend.save(update_fields=["committed_wei"])


def _reservation_bill(reservation: Reservation | None, *, node_price_per_token_wei: int,
                      tokens: int, protocol_fee_bps: int, label) -> int:
    """Settle for `tokens` (release it all for none); what the user was charged."""
    try:
        if reservation is not None and tokens > 0:
            split = settlement_for(reservation.tier, node_price_per_token_wei, tokens,
                                   protocol_fee_bps=protocol_fee_bps)
            reservation_settle(reservation, **split._asdict())
            return split.charged_wei
        if reservation is not None:
            reservation_release(reservation, reason="no tokens delivered")
    except ReservationClosed:
        # A sweep released a reservation held too long; the job was not charged.
        log.warning("discord job %s: reservation closed before settlement", label)
    return 0


@transaction.atomic
def job_settle(*, job_id, node_price_per_token_wei: int, tokens: int, protocol_fee_bps: int,
               text: str, host: str) -> DiscordJob:
    """Charge a finished job for the tokens it got (release it all when it got none) and
    record its answer. Settling a job already closed changes nothing. A job whose row went
    while it ran (an admin deleted it, or its server) is charged all the same, through
    its reservation, which outlives the row; the answer is then not recorded."""
    # Only the job's row: the reservation is locked by the ledger's own services.
    job = (DiscordJob.objects.select_for_update(of=("self",))
           .select_related("server", "reservation").filter(pk=job_id).first())
    price = {"node_price_per_token_wei": node_price_per_token_wei, "tokens": tokens,
             "protocol_fee_bps": protocol_fee_bps}
    if job is None:
        reservation = Reservation.objects.filter(reference=f"discord:{job_id}").first()
        charged = _reservation_bill(reservation, label=job_id, **price)
        return DiscordJob(id=job_id, status=Status.DONE, text=text, tokens=tokens, host=host,
                          cost_wei=charged, finished=timezone.now())
    if job.finished is not None:
        return job
    charged = _reservation_bill(job.reservation, label=job.id, **price)
    _uncommit(job, charged)
    job.status = Status.DONE
    job.text, job.tokens, job.host, job.cost_wei = text, tokens, host, charged
    job.finished = timezone.now()
    job.save()
    return job


@transaction.atomic
def job_fail(*, job_id, code: str, message: str, text: str = "") -> DiscordJob:
    """Record a failed job and give back its whole reservation (nothing was delivered for
    which a host was paid)."""
    # Only the job's row: the reservation is locked by the ledger's own services.
    job = (DiscordJob.objects.select_for_update(of=("self",))
           .select_related("server", "reservation").filter(pk=job_id).first())
    if job is None:  # the row went while the job ran; its reservation did not
        reservation = Reservation.objects.filter(reference=f"discord:{job_id}").first()
        if reservation is not None and reservation.state == ReservationState.HELD:
            reservation_release(reservation, reason=f"{code}: {message}"[:200])
        return DiscordJob(id=job_id, status=Status.FAILED, error_code=code[:40],
                          error_message=message, text=text, finished=timezone.now())
    if job.finished is not None:
        return job
    reservation = job.reservation
    if reservation is not None and reservation.state == ReservationState.HELD:
        reservation_release(reservation, reason=f"{code}: {message}"[:200])
    _uncommit(job, 0)
    job.status = Status.FAILED
    job.error_code, job.error_message, job.text = code[:40], message, text
    job.finished = timezone.now()
    job.save()
    return job


def history_prune(*, user_id: int) -> int:
    """Forget this user's jobs beyond the newest DISCORD_HISTORY_KEEP (running ones stay:
    their money is still open). The ledger keeps every reservation regardless."""
    keep = settings.DISCORD_HISTORY_KEEP
    old = list(DiscordJob.objects.filter(user_id=user_id).order_by("-created")
               .values_list("pk", flat=True)[keep:])
    if not old:
        return 0
    deleted, _ = DiscordJob.objects.filter(pk__in=old, finished__isnull=False).delete()
    return deleted
