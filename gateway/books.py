"""The money and the request record of one gateway request: reserve the worst case and
record the request as running; settle (or release) and finish the record; record a
refusal or a cache hit.

Two ways to the same rows:
  * OrmBooks: accounts.services through the ORM on the gateway's database threads.
    Every database Django runs on (SQLite in the embedded default), and every case.
  * SqlBooks (PostgreSQL): each step is one SQL statement, sent from the event loop on
    the gateway's own connections (gateway.conn). Reserving is a conditional
    UPDATE of the account (`balance_wei >= amount`, so it takes the row lock, checks and
    debits at once) with the reservation, its ledger entry and the request record
    inserted by the same statement; settling updates the reservation (only while held),
    then the account, and inserts the entries and finishes the record, again in one
    statement. One round trip and one commit each, where the ORM takes ten statements
    for the two. The rows are exactly those accounts.services writes: the same ledger,
    the same invariant (accounts.selectors.ledger_invariant_violations). Whatever is
    not the common case (no account yet, a reference used before, a reservation no
    longer held) goes to OrmBooks, whose answers are the reference.

Locks are taken reservation first, then account, as accounts.services does, so the two
ways never deadlock each other.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import psycopg
from django.db import transaction
from django.utils import timezone

from accounts.errors import BillingError, InsufficientFunds
from accounts.models import Account, ApiKey, LedgerEntry, Reservation, User
from accounts.services import (
    account_get_or_create,
    balance_reserve,
    reservation_release,
    reservation_settle,
)
from accounts.tiers import price_for, settlement_for
from gateway.conn import pg_pool
from gateway.db import db
from gateway.errors import GatewayError
from gateway.keys import api_key_forget
from gateway.models.requests import GatewayRequest, RequestStatus


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def insufficient(required_wei: int, available_wei: int) -> GatewayError:
    return GatewayError(
        "INSUFFICIENT_FUNDS", f"this request may cost up to {required_wei} wei; "
        f"{available_wei} wei are available", required=str(required_wei),
        available=str(available_wei))


@dataclass(frozen=True)
class Held:
    """An open reservation, as either way to the ledger made it."""

    id: int
    amount_wei: int
    tier: str


# ---- The ORM -----------------------------------------------------------------------------


def _record_failure(*, api_key, request_id, endpoint, model, max_tokens, error: GatewayError,
                    started: float, stream: bool) -> None:
    GatewayRequest.objects.create(
        id=request_id, user_id=api_key.user_id, api_key_id=api_key.pk, endpoint=endpoint,
        model=model, max_tokens=max_tokens, status=RequestStatus.FAILED, stream=stream,
        error_code=error.code, error_message=error.message[:500],
        finished_at=timezone.now(), duration_ms=ms_since(started))


def _record_hit(*, api_key, request_id, endpoint, model, max_tokens, hit: dict,
                started: float, stream: bool) -> None:
    GatewayRequest.objects.create(
        id=request_id, user_id=api_key.user_id, api_key_id=api_key.pk, endpoint=endpoint,
        model=model, max_tokens=max_tokens, status=RequestStatus.DONE, cached=True,
        stream=stream, tokens=hit["tokens"], cost_wei=0, text=hit["text"], host=hit["host"],
        finish_reason=hit["finish_reason"], finished_at=timezone.now(),
        duration_ms=ms_since(started))


def _open(*, api_key, request_id, endpoint, model, max_tokens, price_wei: int,
          reference: str, stream: bool, started: float) -> Reservation:
    try:
        # One transaction, so one commit (one WAL flush) for the money and the record.
        with transaction.atomic():
            account = account_get_or_create(api_key.user)
            worst = price_for(account.tier, price_wei, max_tokens).charge_wei
            reservation = balance_reserve(account, amount_wei=worst, reference=reference)
            GatewayRequest.objects.create(
                id=request_id, user_id=api_key.user_id, api_key_id=api_key.pk,
                endpoint=endpoint, model=model, max_tokens=max_tokens, stream=stream,
                reference=reference)
    except InsufficientFunds as exc:
        error = insufficient(exc.required_wei, exc.available_wei)
        _record_failure(api_key=api_key, request_id=request_id, endpoint=endpoint,
                        model=model, max_tokens=max_tokens, error=error, started=started,
                        stream=stream)
        raise error from exc
    except BillingError as exc:
        raise GatewayError(exc.code, exc.message) from exc
    return reservation


@transaction.atomic
def _close(reservation_id: int, *, request_id, price_wei: int, tokens: int, fee_bps: int,
           fields: dict) -> int:
    reservation = Reservation.objects.get(pk=reservation_id)
    if tokens == 0:
        reservation_release(reservation, reason=fields.get("error_code") or "no tokens")
        charged = 0
    else:
        split = settlement_for(reservation.tier, price_wei, tokens, protocol_fee_bps=fee_bps)
        reservation_settle(reservation, **split._asdict())
        charged = split.charged_wei
    GatewayRequest.objects.filter(pk=request_id).update(
        tokens=tokens, cost_wei=charged, finished_at=timezone.now(), **fields)
    return charged


class OrmBooks:
    async def record_failure(self, **kwargs) -> None:
        await db(_record_failure, **kwargs)

    async def record_hit(self, **kwargs) -> None:
        await db(_record_hit, **kwargs)

    async def open(self, **kwargs) -> Held:
        reservation = await db(_open, **kwargs)
        return Held(id=reservation.pk, amount_wei=reservation.amount_wei,
                    tier=reservation.tier)

    async def close(self, held: Held, **kwargs) -> int:
        """Settle for `tokens` (release all when there are none) and finish the record
        with `fields`, in one transaction. Returns what was charged."""
        return await db(_close, held.id, **kwargs)


# ---- One statement each (PostgreSQL) ----------------------------------------------------

_ACCOUNT = Account._meta.db_table
_RESERVATION = Reservation._meta.db_table
_ENTRY = LedgerEntry._meta.db_table
_REQUEST = GatewayRequest._meta.db_table

_REQUEST_COLUMNS = ("id, user_id, api_key_id, endpoint, model, status, max_tokens, "
                    "prompt_tokens, tokens, cost_wei, cached, stream, finish_reason, "
                    "error_code, error_message, text, host, job_id, reference, created_at, "
                    "finished_at, duration_ms")

_RESERVE = f"""
WITH account AS (
    UPDATE {_ACCOUNT}
       SET balance_wei = balance_wei - %(amount)s, held_wei = held_wei + %(amount)s,
           updated_at = now()
     WHERE id = %(account)s AND tier = %(tier)s AND balance_wei >= %(amount)s {{guard}}
 RETURNING id, balance_wei, held_wei
), reservation AS (
    INSERT INTO {_RESERVATION} (account_id, reference, amount_wei, tier, state, charged_wei,
                                refunded_wei, host_payout_wei, protocol_fee_wei,
                                platform_fee_wei, reason, created_at)
    SELECT id, %(reference)s, %(amount)s, %(tier)s, 'held', 0, 0, 0, 0, 0, '', now()
      FROM account
 RETURNING id
), entry AS (
    INSERT INTO {_ENTRY} (account_id, kind, amount_wei, balance_after_wei, held_after_wei,
                          reservation_id, reference, memo, created_at)
    SELECT account.id, 'reserve', %(amount)s, account.balance_wei, account.held_wei,
           reservation.id, %(reference)s, '', now()
      FROM account, reservation
), request AS (
    INSERT INTO {_REQUEST} ({_REQUEST_COLUMNS})
    SELECT %(request)s, %(user)s, %(key)s, %(endpoint)s, %(model)s, 'running',
           %(max_tokens)s, 0, 0, 0, false, %(stream)s, '', '', '', '', '', '', %(reference)s,
           now(), NULL, NULL
      FROM reservation
)
SELECT id FROM reservation
"""
# The guards: this path moves an account's money only while the till does not hold it
# (accounts.till); the till's own statements (gateway.till) only for the generation of
# the mirror they come from.
_NOT_IN_TILL = "AND till = ''"
_RESERVATION_NOT_IN_TILL = (f"AND NOT EXISTS (SELECT 1 FROM {_ACCOUNT} a "
                            f"WHERE a.id = account_id AND a.till <> '')")
# And only for a usable key: the gateway may serve a billed request's key as it read it a
# moment ago (gateway.keys, "Reuse"), so it is checked again here, where money moves.
KEY_USABLE = (f"EXISTS (SELECT 1 FROM {ApiKey._meta.db_table} k "
              f"JOIN {User._meta.db_table} u ON u.id = k.user_id "
              f"WHERE k.id = %(key)s AND k.revoked_at IS NULL "
              f"AND (k.expires_at IS NULL OR k.expires_at > now()) AND u.is_active)")
RESERVE = _RESERVE.replace("{guard}", f"{_NOT_IN_TILL} AND {KEY_USABLE}")
TILL_RESERVE = _RESERVE.replace("{guard}", "AND till = %(gen)s")

RECORD = f"""
INSERT INTO {_REQUEST} ({_REQUEST_COLUMNS})
VALUES (%(request)s, %(user)s, %(key)s, %(endpoint)s, %(model)s, %(status)s,
        %(max_tokens)s, 0, %(tokens)s, 0, %(cached)s, %(stream)s, %(finish_reason)s,
        %(error_code)s, %(error_message)s, %(text)s, %(host)s, '', '', now(), now(),
        %(duration_ms)s)
"""

# Settle: the charge leaves the hold, then the rest of the hold goes back to the balance;
# each entry with the account's figures right after it (the refund only when there is
# one), in that order.
_SETTLE = f"""
WITH reservation AS (
    UPDATE {_RESERVATION}
       SET state = 'settled', charged_wei = %(charged)s,
           refunded_wei = amount_wei - %(charged)s, host_payout_wei = %(host)s,
           protocol_fee_wei = %(protocol)s, platform_fee_wei = %(platform)s,
           closed_at = now()
     WHERE id = %(reservation)s AND state = 'held' AND amount_wei >= %(charged)s
           {{guard}}
 RETURNING id, account_id, amount_wei - %(charged)s AS refund, reference
), account AS (
    UPDATE {_ACCOUNT}
       SET held_wei = held_wei - reservation.refund - %(charged)s,
           balance_wei = balance_wei + reservation.refund, updated_at = now()
      FROM reservation
     WHERE {_ACCOUNT}.id = reservation.account_id
 RETURNING {_ACCOUNT}.id, balance_wei, held_wei
), entries AS (
    INSERT INTO {_ENTRY} (account_id, kind, amount_wei, balance_after_wei, held_after_wei,
                          reservation_id, reference, host_payout_wei, protocol_fee_wei,
                          platform_fee_wei, memo, created_at)
    SELECT account.id, step.kind, step.amount, step.balance_after, step.held_after,
           reservation.id, reservation.reference, step.host, step.protocol, step.platform,
           '', now()
      FROM account, reservation, LATERAL (VALUES
           (1, 'settle', %(charged)s::numeric, account.balance_wei - reservation.refund,
            account.held_wei + reservation.refund, %(host)s::numeric,
            %(protocol)s::numeric, %(platform)s::numeric),
           (2, 'refund', reservation.refund, account.balance_wei, account.held_wei,
            NULL, NULL, NULL)
           ) AS step(n, kind, amount, balance_after, held_after, host, protocol, platform)
     WHERE step.n = 1 OR reservation.refund > 0
     ORDER BY step.n
), request AS (
    UPDATE {_REQUEST} SET {{finish}} FROM reservation WHERE {_REQUEST}.id = %(request)s
)
SELECT id FROM reservation
"""

_RELEASE = f"""
WITH reservation AS (
    UPDATE {_RESERVATION}
       SET state = 'released', refunded_wei = amount_wei, reason = %(reason)s,
           closed_at = now()
     WHERE id = %(reservation)s AND state = 'held' {{guard}}
 RETURNING id, account_id, amount_wei, reference
), account AS (
    UPDATE {_ACCOUNT}
       SET held_wei = held_wei - reservation.amount_wei,
           balance_wei = balance_wei + reservation.amount_wei, updated_at = now()
      FROM reservation
     WHERE {_ACCOUNT}.id = reservation.account_id
 RETURNING {_ACCOUNT}.id, balance_wei, held_wei
), entry AS (
    INSERT INTO {_ENTRY} (account_id, kind, amount_wei, balance_after_wei, held_after_wei,
                          reservation_id, reference, memo, created_at)
    SELECT account.id, 'refund', reservation.amount_wei, account.balance_wei,
           account.held_wei, reservation.id, reservation.reference, %(reason)s, now()
      FROM account, reservation
), request AS (
    UPDATE {_REQUEST} SET {{finish}} FROM reservation WHERE {_REQUEST}.id = %(request)s
)
SELECT id FROM reservation
"""

SETTLE = _SETTLE.replace("{guard}", _RESERVATION_NOT_IN_TILL)
RELEASE = _RELEASE.replace("{guard}", _RESERVATION_NOT_IN_TILL)
# The till's close names its reservation by reference: it is queued right behind the
# reservation's own rows, before their id is known.
_BY_REFERENCE = ("WHERE id = %(reservation)s AND state = 'held'",
                 "WHERE reference = %(reference)s AND state = 'held'")
TILL_SETTLE = _SETTLE.replace("{guard}", "").replace(*_BY_REFERENCE)
TILL_RELEASE = _RELEASE.replace("{guard}", "").replace(*_BY_REFERENCE)

# What closing a request may write on its record, besides tokens, cost and finished_at.
_FINISH_FIELDS = frozenset({"status", "text", "host", "job_id", "prompt_tokens",
                            "finish_reason", "ttft_ms", "duration_ms", "error_code",
                            "error_message", "end_user"})
_statements: dict[tuple, str] = {}


def _closing(template: str, fields: dict) -> str:
    """SETTLE or RELEASE finishing the record with `fields` (one text per set of names,
    so each is prepared once per connection)."""
    names = tuple(sorted(fields))
    unknown = set(names) - _FINISH_FIELDS
    if unknown:
        raise ValueError(f"not a field a request is finished with: {sorted(unknown)}")
    key = (template, names)
    statement = _statements.get(key)
    if statement is None:
        finish = ", ".join(["tokens = %(tokens)s", "cost_wei = %(charged)s",
                            "finished_at = now()",
                            *(f"{name} = %(f_{name})s" for name in names)])
        statement = _statements[key] = template.replace("{finish}", finish)
    return statement


def failure_record(*, api_key, request_id, endpoint, model, max_tokens,
                   error: GatewayError, started: float, stream: bool) -> dict:
    """RECORD's parameters for a request refused or failed before its money moved."""
    return {"request": request_id, "user": api_key.user_id, "key": api_key.pk,
            "endpoint": endpoint, "model": model, "status": RequestStatus.FAILED.value,
            "max_tokens": max_tokens, "tokens": 0, "cached": False, "stream": stream,
            "finish_reason": "", "error_code": error.code,
            "error_message": error.message[:500], "text": "", "host": "",
            "duration_ms": ms_since(started)}


class SqlBooks:
    def __init__(self, pool):
        self.pool = pool
        self.orm = OrmBooks()

    async def _run(self, statement: str, params: dict):
        """The first row the statement returns, or None."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(statement, params)
            return await cursor.fetchone() if cursor.description is not None else None

    async def record_failure(self, *, api_key, request_id, endpoint, model, max_tokens,
                             error: GatewayError, started: float, stream: bool,
                             conn=None) -> None:
        """`conn`: a connection the caller holds (taking a second one from the pool while
        holding one could wait forever, once every caller holds one)."""
        params = failure_record(api_key=api_key, request_id=request_id, endpoint=endpoint,
                                model=model, max_tokens=max_tokens, error=error,
                                started=started, stream=stream)
        if conn is not None:
            await conn.execute(RECORD, params)
        else:
            await self._run(RECORD, params)

    async def record_hit(self, *, api_key, request_id, endpoint, model, max_tokens,
                         hit: dict, started: float, stream: bool) -> None:
        await self._run(RECORD, {
            "request": request_id, "user": api_key.user_id, "key": api_key.pk,
            "endpoint": endpoint, "model": model, "status": RequestStatus.DONE.value,
            "max_tokens": max_tokens, "tokens": hit["tokens"], "cached": True,
            "stream": stream, "finish_reason": hit["finish_reason"], "error_code": "",
            "error_message": "", "text": hit["text"], "host": hit["host"],
            "duration_ms": ms_since(started)})

    async def open(self, *, api_key, request_id: uuid.UUID, endpoint, model, max_tokens,
                   price_wei: int, reference: str, stream: bool, started: float) -> Held:
        account = getattr(api_key, "gateway_account", None)  # (id, tier) from the key
        if account is None:  # no account yet: made (with its credit) by accounts.services
            return await self.orm.open(
                api_key=api_key, request_id=request_id, endpoint=endpoint, model=model,
                max_tokens=max_tokens, price_wei=price_wei, reference=reference,
                stream=stream, started=started)
        account_id, tier = account
        params = {"account": account_id, "reference": reference, "request": request_id,
                  "user": api_key.user_id, "key": api_key.pk, "endpoint": endpoint,
                  "model": model, "max_tokens": max_tokens, "stream": stream}
        async with self.pool.connection() as conn:
            for _ in range(3):
                worst = price_for(tier, price_wei, max_tokens).charge_wei
                try:
                    cursor = await conn.execute(RESERVE, {**params, "amount": worst,
                                                          "tier": tier})
                except psycopg.errors.UniqueViolation:
                    break  # the reference was reserved before: accounts.services decides
                row = await cursor.fetchone()
                if row is not None:
                    return Held(id=row[0], amount_wei=worst, tier=tier)
                # Refused: short of money, the tier changed since the key was read, or the
                # key is no longer usable.
                cursor = await conn.execute(
                    f"SELECT balance_wei, tier, till, {KEY_USABLE} FROM {_ACCOUNT} "
                    f"WHERE id = %(account)s", {"account": account_id, "key": api_key.pk})
                balance, now_tier, till, usable = await cursor.fetchone()
                if not usable:
                    api_key_forget(api_key.pk)
                    error = GatewayError("UNAUTHENTICATED", "this API key was revoked or "
                                         "has expired, or its user is disabled")
                    await self.record_failure(
                        api_key=api_key, request_id=request_id, endpoint=endpoint,
                        model=model, max_tokens=max_tokens, error=error, started=started,
                        stream=stream, conn=conn)
                    raise error
                if till:
                    break  # the till holds its money: accounts.services takes it back
                if now_tier == tier:
                    error = insufficient(worst, int(balance))
                    await self.record_failure(
                        api_key=api_key, request_id=request_id, endpoint=endpoint,
                        model=model, max_tokens=max_tokens, error=error, started=started,
                        stream=stream, conn=conn)
                    raise error
                tier = now_tier
        return await self.orm.open(
            api_key=api_key, request_id=request_id, endpoint=endpoint, model=model,
            max_tokens=max_tokens, price_wei=price_wei, reference=reference, stream=stream,
            started=started)

    async def close(self, held: Held, *, request_id, price_wei: int, tokens: int,
                    fee_bps: int, fields: dict) -> int:
        params = {"reservation": held.id, "request": request_id, "tokens": tokens,
                  **{f"f_{name}": value for name, value in fields.items()}}
        if tokens == 0:
            charged = 0
            statement = _closing(RELEASE, fields)
            params.update(charged=0, reason=(fields.get("error_code") or "no tokens")[:200])
        else:
            split = settlement_for(held.tier, price_wei, tokens, protocol_fee_bps=fee_bps)
            charged = split.charged_wei
            statement = _closing(SETTLE, fields)
            params.update(charged=charged, host=split.host_payout_wei,
                          protocol=split.protocol_fee_wei, platform=split.platform_fee_wei)
        if await self._run(statement, params) is not None:
            return charged
        # Not held any more (closed already, or swept): accounts.services answers, the
        # same way for a repeat as for a conflict.
        return await self.orm.close(held, request_id=request_id, price_wei=price_wei,
                                    tokens=tokens, fee_bps=fee_bps, fields=fields)


def books():
    """SqlBooks on PostgreSQL (and GATEWAY_DIRECT_SQL), else OrmBooks. (The till's books,
    when it is on: gateway.till.ledger_books.)"""
    pool = pg_pool()
    return SqlBooks(pool) if pool is not None else OrmBooks()


__all__ = ["Held", "OrmBooks", "SqlBooks", "books", "failure_record", "insufficient",
           "ms_since"]
