"""The till: a /v1 request's money reserved and settled in Redis, its rows written behind.

    reserve  one Lua script on the account's mirror (accounts.till): the exact check and
             debit, in microseconds; the request starts at once. Its rows (the
             reservation, its ledger entry, the request record: gateway.books'
             TILL_RESERVE statement) go into this process's queue.
    settle   one Lua script gives the refund back to the mirror; the settle or release
             rows go into the queue, and the answer waits until they are written
             (at most GATEWAY_TILL_WAIT_MS), so a client that reads its balance, usage or
             request after an answer finds it there.

The queue is written by one task per event loop: everything queued since the last write
goes in one transaction, its statements pipelined (one round trip, one commit for all of
them) — a group commit, the rows exactly those gateway.books writes one request at a
time. Then one script tells the mirrors how many of their steps are written.

What a reservation's write can find, and what follows:
  * written: the request goes on as any other;
  * PostgreSQL's balance short for now: another process's refund that made the room is
    not written yet. Tried again with the next batches, for DEFER_S;
  * the mirror's generation is no longer PostgreSQL's (its money was taken back while
    this step was unwritten, or Redis lost the mirror), or short for longer: written
    off. No money moves: the user is not charged for the request, which the platform
    bears (counted, `written_off`), and the request is recorded with what happened.
docs/gateway.md ("Money") has the reasons and the failure analysis.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field

import psycopg
import redis
from django.conf import settings

from accounts import till as mirror
from accounts.tiers import price_for, settlement_for
from gateway.books import (
    _ACCOUNT,
    _REQUEST,
    _RESERVATION,
    RECORD,
    TILL_RELEASE,
    TILL_RESERVE,
    TILL_SETTLE,
    Held,
    SqlBooks,
    _closing,
    books,
    failure_record,
    insufficient,
)
from gateway.conn import connections_on_close, pg_pool, redis_client
from gateway.models.requests import RequestStatus
from observability.metrics import count_till

log = logging.getLogger(__name__)

# How long a reservation whose write finds PostgreSQL's balance short is tried again.
DEFER_S = 2.0
_NOT_WRITTEN = object()
# Steps written are told to their mirror with its next script, or after this long.
TELL_AFTER_S = 0.02
# Waiting for a mirror being taken back, between looks.
CLOSED_PAUSE_S = 0.002


@dataclass(frozen=True, eq=False)
class Slip(Held):
    """A reservation made on the till. `written` resolves to the reservation's id once
    its rows are written, or None when it was written off; `record` is what its
    reservation's statement was given."""

    account_id: int = 0
    gen: str = ""
    record: dict = field(default_factory=dict)
    written: asyncio.Future | None = None


@dataclass(eq=False)
class _Step:
    statement: str
    params: dict
    done: asyncio.Future
    account_id: int | None = None
    gen: str = ""  # the mirror generation whose step this is ("" : none)
    reserve: bool = False
    queued: float = field(default_factory=time.monotonic)


class Till:
    """One event loop's queue of steps and the task that writes them."""

    def __init__(self, pool, redis):
        self.pool = pool
        self.redis = redis
        self.queue: list[_Step] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.writing = False
        # Steps written, by (account, generation), that no script has told the mirror of.
        self.untold: dict[tuple[int, str], int] = {}
        self.telling: asyncio.Task | None = None
        self._scripts = {name: redis.register_script(getattr(mirror, name))
                         for name in ("RESERVE", "REFUND", "WRITTEN", "INSTALL")}

    # ---- the queue -------------------------------------------------------------------

    def put(self, step: _Step) -> asyncio.Future:
        self.queue.append(step)
        self.wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._write_forever())
        return step.done

    async def _write_forever(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch, self.queue = self.queue, []
                self.writing = True
                try:
                    await self._write(batch)
                except Exception:  # never lose the queue to a bug: log, and try again
                    log.exception("till: writing %s steps failed", len(batch))
                    self.queue[:0] = [step for step in batch if not step.done.done()]
                    await asyncio.sleep(0.1)
                finally:
                    self.writing = False

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until everything queued is written (and the closes waiting on it are
        done), then stop the writer (a loop's end)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            mine = [task for task in _pending if task.get_loop() is loop]
            if not (self.queue or self.writing or mine):
                break
            if mine:
                await asyncio.wait(mine, timeout=max(0.0, deadline - time.monotonic()))
            else:
                await asyncio.sleep(0.001)
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass

    async def _write(self, batch: list[_Step]) -> None:
        rows = await self._execute(batch)
        deferred: list[_Step] = []
        written: dict[tuple[int, str], int] = {}
        looked: dict = {}  # one look at each account, for many refused steps
        for step, row in zip(batch, rows, strict=True):
            if step.reserve and row is None:
                if await self._defer(step, looked):
                    deferred.append(step)
                    continue
                step.done.set_result(None)
            elif not step.done.done():
                step.done.set_result(row[0] if row else None)
            if step.gen:
                written[(step.account_id, step.gen)] = written.get(
                    (step.account_id, step.gen), 0) + 1
        count_till("batches")
        count_till("steps", len(batch) - len(deferred))
        for account_gen, count in written.items():
            self.untold[account_gen] = self.untold.get(account_gen, 0) + count
        if self.untold and (self.telling is None or self.telling.done()):
            self.telling = asyncio.ensure_future(self._tell_written())
            _pending.add(self.telling)
            self.telling.add_done_callback(_pending.discard)
        if deferred:
            self.queue[:0] = deferred
            await asyncio.sleep(0.001)
            self.wake.set()

    def _told_with(self, account_id: int) -> list[str]:
        """The arguments that tell a script for this account's mirror of its steps
        written since (taken off `untold`; given back by `_untold` if the call fails)."""
        for (account, gen), count in self.untold.items():
            if account == account_id:
                del self.untold[(account, gen)]
                return [gen, str(count)]
        return ["", "0"]

    def _untold(self, account_id: int, told: list[str]) -> None:
        if told[0]:
            key = (account_id, told[0])
            self.untold[key] = self.untold.get(key, 0) + int(told[1])

    async def _tell_written(self) -> None:
        """Tell the mirrors of their steps written that no script of theirs has carried
        within TELL_AFTER_S (a quiet account's)."""
        while self.untold:
            await asyncio.sleep(TELL_AFTER_S)
            written, self.untold = self.untold, {}
            if not written:
                continue
            keys = [mirror.key(account_id) for account_id, _ in written]
            args = [v for (_, gen), n in written.items() for v in (gen, n)]
            try:
                await self._scripts["WRITTEN"](keys=keys, args=args)
            except Exception as exc:  # the reconcile finds the mirror stuck, resets it
                log.warning("till: steps written, mirrors not told: %s", exc)

    async def _execute(self, batch: list[_Step]) -> list[tuple | None]:
        """Every step's first row (None: none), written in one transaction. PostgreSQL
        being away, or a connection cut, is waited out (the answers waiting on it go at
        GATEWAY_TILL_WAIT_MS, their rows do not); a transaction whose commit may or may
        not have happened is looked up step by step before anything is sent again, so
        no step is ever written twice. A batch that fails on one step's own data is
        written step by step, and that step is given up (None, logged)."""
        rows: dict[int, tuple | None] = {}
        todo = list(range(len(batch)))
        pause = 0.05
        while todo:
            try:
                for index, row in zip(todo, await self._transaction([batch[i] for i in todo]),
                                      strict=True):
                    rows[index] = row
                todo = []
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                log.warning("till: PostgreSQL away, %s steps waiting: %s", len(todo), exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                try:
                    for index in list(todo):
                        found = await self._already(batch[index])
                        if found is not _NOT_WRITTEN:
                            rows[index] = found
                            todo.remove(index)
                except (psycopg.Error, OSError):
                    continue  # still away: look again after the next pause
            except psycopg.Error as exc:
                if len(todo) == 1:
                    log.error("till: step not written (%s): %s",
                              batch[todo[0]].statement.strip()[:60], exc)
                    rows[todo[0]] = None
                    todo = []
                else:
                    for index in todo:
                        rows[index] = (await self._execute([batch[index]]))[0]
                    todo = []
        return [rows[index] for index in range(len(batch))]

    async def _already(self, step: _Step):
        """The row a step's statement returned, if it is written already; else
        _NOT_WRITTEN."""
        async with self.pool.connection() as conn:
            if step.statement is RECORD:
                cursor = await conn.execute(f"SELECT 1 FROM {_REQUEST} WHERE id = %s",
                                            (step.params["request"],))
                return None if await cursor.fetchone() else _NOT_WRITTEN
            cursor = await conn.execute(
                f"SELECT id, state FROM {_RESERVATION} WHERE reference = %s",
                (step.params["reference"],))
            found = await cursor.fetchone()
        if found is None:
            return _NOT_WRITTEN
        if step.reserve:
            return (found[0],)
        return (found[0],) if found[1] != "held" else _NOT_WRITTEN

    async def _transaction(self, batch: list[_Step]) -> list[tuple | None]:
        async with self.pool.connection() as conn:
            if len(batch) == 1:  # one statement commits alone: no BEGIN, no COMMIT
                cursor = await conn.execute(batch[0].statement, batch[0].params)
                return [await cursor.fetchone() if cursor.description is not None else None]
            async with conn.transaction():
                async with conn.pipeline():
                    cursors = [await conn.execute(s.statement, s.params) for s in batch]
                return [await c.fetchone() if c.description is not None else None
                        for c in cursors]

    async def _defer(self, step: _Step, looked: dict) -> bool:
        """A reservation not written: try it again later (True), or write it off.
        `looked`: the accounts' generations read for this batch (and "detached" once its
        mirror is dropped), so a burst of refused steps costs one look an account."""
        named = looked.get(step.account_id)
        if named is None:
            try:
                async with self.pool.connection() as conn:
                    cursor = await conn.execute(
                        f"SELECT till FROM {_ACCOUNT} WHERE id = %s", (step.account_id,))
                    row = await cursor.fetchone()
            except (psycopg.Error, OSError):  # away again: try the step again
                return True
            named = looked[step.account_id] = row[0] if row is not None else ""
        same = named == step.gen
        if same and time.monotonic() - step.queued < DEFER_S:
            count_till("deferred")
            return True
        count_till("written_off")
        log.error("till: reservation %s of account %s written off (%s)",
                  step.params.get("reference"), step.account_id,
                  "short" if same else "generation gone")
        # Either way this mirror is done: off PostgreSQL's figure, or of a generation
        # PostgreSQL no longer names. The next request mirrors the balance afresh.
        if (step.account_id, step.gen) not in looked:
            looked[(step.account_id, step.gen)] = True
            try:
                await self.detach(step.account_id, step.gen)
            except (psycopg.Error, OSError) as exc:
                log.warning("till: mirror of account %s not detached: %s", step.account_id,
                            exc)
        return False

    async def detach(self, account_id: int, gen: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(f"UPDATE {_ACCOUNT} SET till = '' WHERE id = %s AND till = %s",
                               (account_id, gen))
        try:
            await self.redis.eval(mirror.DROP, 1, mirror.key(account_id), gen)
        except Exception as exc:
            log.warning("till: mirror of account %s not dropped: %s", account_id, exc)

    # ---- the mirror ------------------------------------------------------------------

    async def reserve(self, account_id: int, amount: int) -> list:
        told = self._told_with(account_id)
        try:
            answer = await self._scripts["RESERVE"](
                keys=[mirror.key(account_id)], args=[str(amount), mirror.now_ms(), *told])
        except BaseException:
            self._untold(account_id, told)
            raise
        return [part.decode() if isinstance(part, bytes) else part for part in answer]

    async def refund(self, slip: Slip, amount: int) -> bool:
        told = self._told_with(slip.account_id)
        try:
            return bool(await self._scripts["REFUND"](
                keys=[mirror.key(slip.account_id)],
                args=[slip.gen, str(amount), mirror.now_ms(), *told]))
        except BaseException:
            self._untold(slip.account_id, told)
            raise

    async def install(self, account_id: int) -> None:
        """Mirror the account's balance, unless the mirror PostgreSQL names is there.
        Under the row lock, so that no other change of its money comes between the read
        and the mirror."""
        gen = mirror.new_generation()
        async with self.pool.connection() as conn:
            async with conn.transaction():
                cursor = await conn.execute(
                    f"SELECT balance_wei, till FROM {_ACCOUNT} WHERE id = %s FOR UPDATE",
                    (account_id,))
                balance, named = await cursor.fetchone()
                made = await self._scripts["INSTALL"](
                    keys=[mirror.key(account_id)],
                    args=[gen, str(int(balance)), named, mirror.now_ms()])
                if made:
                    await conn.execute(f"UPDATE {_ACCOUNT} SET till = %s WHERE id = %s",
                                       (gen, account_id))
        if made:
            count_till("installed")


_tills: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def ledger_books():
    """The books a request's money goes through: the till's (TillBooks) on PostgreSQL
    with Redis and GATEWAY_TILL on, else gateway.books.books()."""
    if not settings.GATEWAY_TILL:
        return books()
    pool = pg_pool()
    if pool is not None:
        till = till_for_loop(pool)
        if till is not None:
            return TillBooks(pool, till, settings.GATEWAY_TILL_WAIT_MS / 1000)
    return books()


def till_for_loop(pool) -> Till | None:
    redis = redis_client()
    if redis is None:
        return None
    loop = asyncio.get_running_loop()
    till = _tills.get(loop)
    if till is None:
        till = _tills[loop] = Till(pool, redis)
    return till


async def till_drain() -> None:
    """Write the running loop's queue and stop its task (tests, shutdown)."""
    till = _tills.pop(asyncio.get_running_loop(), None)
    if till is not None:
        await till.drain()


connections_on_close(till_drain)  # the queue is written before the connections go


class TillBooks(SqlBooks):
    """gateway.books' SqlBooks with /v1 requests' money on the till. Batch items (whose
    references repeat by design) and accounts not made yet take SqlBooks' way."""

    def __init__(self, pool, till: Till, wait_s: float):
        super().__init__(pool)
        self.till = till
        self.wait_s = wait_s

    async def _wait(self, future: asyncio.Future):
        return await asyncio.wait_for(asyncio.shield(future), self.wait_s)

    async def record_failure(self, **kwargs) -> None:
        if kwargs.get("conn") is not None:
            return await super().record_failure(**kwargs)
        await self._put_record(failure_record(**kwargs))

    async def _put_record(self, params: dict) -> None:
        try:
            await self._wait(self.till.put(_Step(
                RECORD, params, asyncio.get_running_loop().create_future())))
        except TimeoutError:
            log.warning("till: record of %s still unwritten after %s s", params["request"],
                        self.wait_s)

    async def open(self, *, api_key, request_id, endpoint, model, max_tokens,
                   price_wei: int, reference: str, stream: bool, started: float) -> Held:
        account = getattr(api_key, "gateway_account", None)
        args = {"api_key": api_key, "request_id": request_id, "endpoint": endpoint,
                "model": model, "max_tokens": max_tokens, "price_wei": price_wei,
                "reference": reference, "stream": stream, "started": started}
        if account is None or endpoint == "batch":
            return await super().open(**args)
        account_id, tier = account
        worst = price_for(tier, price_wei, max_tokens).charge_wei
        record = {"account": account_id, "tier": tier, "amount": worst,
                  "reference": reference, "request": request_id, "user": api_key.user_id,
                  "key": api_key.pk, "endpoint": endpoint, "model": model,
                  "max_tokens": max_tokens, "stream": stream}
        try:
            # Shielded: a reservation the script made is always queued, even when the
            # request is cancelled meanwhile (then it is swept as any reservation left).
            answer = await asyncio.shield(self._reserve(record))
        except redis.RedisError as exc:  # Redis away: the way of one statement
            log.warning("till unavailable, reserving in PostgreSQL: %s", exc)
            return await super().open(**args)
        if isinstance(answer, Slip):
            return answer
        if answer is None:  # the mirror never settled down: one statement
            return await super().open(**args)
        error = insufficient(worst, answer)
        await self.record_failure(api_key=api_key, request_id=request_id, endpoint=endpoint,
                                  model=model, max_tokens=max_tokens, error=error,
                                  started=started, stream=stream)
        raise error

    async def _reserve(self, record: dict) -> Slip | int | None:
        """The slip, or the balance when it is short, or None when no mirror could be
        had in time."""
        account_id = record["account"]
        deadline = time.monotonic() + mirror.RELEASE_WAIT_S + 1
        while True:
            answer = await self.till.reserve(account_id, record["amount"])
            if answer[0] == "ok":
                break
            if answer[0] == "short":
                return int(answer[1])
            if time.monotonic() > deadline:
                return None
            if answer[0] == "closed":  # being taken back: the next mirror follows
                await asyncio.sleep(CLOSED_PAUSE_S)
            else:
                await self.till.install(account_id)
        gen = answer[1]
        written = self.till.put(_Step(TILL_RESERVE, {**record, "gen": gen},
                                      asyncio.get_running_loop().create_future(),
                                      account_id=account_id, gen=gen, reserve=True))
        return Slip(id=0, amount_wei=record["amount"], tier=record["tier"],
                    account_id=account_id, gen=gen, record=record, written=written)

    async def close(self, held: Held, *, request_id, price_wei: int, tokens: int,
                    fee_bps: int, fields: dict) -> int:
        """Give the refund back to the mirror and queue the settlement (or release) right
        behind the reservation's rows; the answer waits for it to be written at most
        GATEWAY_TILL_WAIT_MS (0: not at all). Returns what is charged."""
        if not isinstance(held, Slip):
            return await super().close(held, request_id=request_id, price_wei=price_wei,
                                       tokens=tokens, fee_bps=fee_bps, fields=fields)
        if tokens == 0:
            charged, split = 0, None
        else:
            split = settlement_for(held.tier, price_wei, tokens, protocol_fee_bps=fee_bps)
            charged = split.charged_wei
        written = held.written
        if written.done() and written.result() is None:  # written off: nothing to settle
            await self._put_record(_written_off_record(held, request_id, tokens, fields))
            return 0
        params = {"reference": held.record["reference"], "request": request_id,
                  "tokens": tokens, **{f"f_{name}": value for name, value in fields.items()}}
        if split is None:
            statement = _closing(TILL_RELEASE, fields)
            params.update(charged=0, reason=(fields.get("error_code") or "no tokens")[:200])
        else:
            statement = _closing(TILL_SETTLE, fields)
            params.update(charged=charged, host=split.host_payout_wei,
                          protocol=split.protocol_fee_wei, platform=split.platform_fee_wei)
        try:
            told = await self.till.refund(held, held.amount_wei - charged)
        except redis.RedisError as exc:  # the mirror missed this refund: taken back below
            log.warning("till: refund not given to the mirror: %s", exc)
            told = False
        step = _Step(statement, params, asyncio.get_running_loop().create_future(),
                     account_id=held.account_id, gen=held.gen if told else "")
        self.till.put(step)
        settled = asyncio.ensure_future(self._settled(held, step, told, request_id=request_id,
                                                      price_wei=price_wei, tokens=tokens,
                                                      fee_bps=fee_bps, fields=fields))
        _pending.add(settled)
        settled.add_done_callback(_pending.discard)
        if self.wait_s <= 0:
            return charged
        try:
            return await self._wait(settled)
        except TimeoutError:
            log.warning("till: settlement of %s still unwritten after %s s", request_id,
                        self.wait_s)
            return charged

    async def _settled(self, held: Slip, step: _Step, told: bool, *, request_id,
                       price_wei: int, tokens: int, fee_bps: int, fields: dict) -> int:
        """What closing the reservation came to, once written: what was charged."""
        row = await step.done
        if not told:  # the mirror missed the refund: the next request mirrors afresh
            await self.till.detach(held.account_id, held.gen)
        if row is not None:
            return step.params["charged"]
        # Nothing was held under that reference when the close was written: its
        # reservation was written off, or was put off (written after the close), or has
        # been closed meanwhile (swept).
        if await held.written is None:
            await self._put_record(_written_off_record(held, request_id, tokens, fields))
            return 0
        again = _Step(step.statement, step.params, asyncio.get_running_loop().create_future())
        if await self.till.put(again) is not None:
            return step.params["charged"]
        return await self.orm.close(held, request_id=request_id, price_wei=price_wei,
                                    tokens=tokens, fee_bps=fee_bps, fields=fields)


# The closes being written (the loop holds tasks only weakly).
_pending: set[asyncio.Future] = set()


def _written_off_record(slip: Slip, request_id, tokens: int, fields: dict) -> dict:
    record = slip.record
    return {"request": request_id, "user": record["user"], "key": record["key"],
            "endpoint": record["endpoint"], "model": record["model"],
            "status": fields.get("status", RequestStatus.DONE),
            "max_tokens": record["max_tokens"], "tokens": tokens, "cached": False,
            "stream": record["stream"],
            "finish_reason": fields.get("finish_reason", ""), "error_code": "NOT_BILLED",
            "error_message": "served without charge: its reservation could not be written",
            "text": fields.get("text", ""), "host": fields.get("host", ""),
            "duration_ms": fields.get("duration_ms")}


__all__ = ["Slip", "Till", "TillBooks", "ledger_books", "till_drain", "till_for_loop"]
