"""An account's spendable balance mirrored in Redis: the gateway's till.

The gateway reserves and settles a /v1 request's money with one Lua script each against
this mirror (microseconds, no PostgreSQL on the way), and writes the same rows the ledger
always had behind it, in batches (gateway.till). PostgreSQL stays the record; the
mirror is a cache of one number that the gateway may change only in step with it:

    inkmarket:till:<account id>  (a hash)
      bal     what the account can spend now: PostgreSQL's balance_wei, less the
              reservations not yet written, plus the refunds not yet written
      gen     this mirror's generation, a random token; PostgreSQL's Account.till names
              the generation its rows were last written for
      n       steps taken on the mirror and not yet written to PostgreSQL
      closed  1 while the mirror is being taken back (no new reservations)
      t       when it last changed (ms)

Amounts are decimal strings: Lua's numbers are doubles, exact only to 2^53, and a
balance in wei is far above that. The scripts do their arithmetic on 14-digit limbs.

Whoever changes an account's money outside the till (accounts.services: deposits,
adjustments, the ORM's reservations, tier changes; the gateway's own SQL path) first
takes the mirror back (`till_release` and then, under the row lock, `till_detach`): it
closes the mirror, waits until every step taken on it is written (at most
RELEASE_WAIT_S), and clears Account.till. A reservation the gateway writes for a
generation that PostgreSQL no longer names is refused by its statement, so a mirror
that went stale (taken back while a step was still unwritten, or left behind by a Redis
that lost its data) can never move PostgreSQL's money. docs/gateway.md ("Money") has
the failure analysis.
"""

from __future__ import annotations

import logging
import secrets
import time

from django.conf import settings

log = logging.getLogger(__name__)

KEY = "inkmarket:till:{}"
PATTERN = "inkmarket:till:*"
# How long taking a mirror back waits for the steps on it to be written: one batch is a
# few milliseconds; a process that died with steps unwritten never writes them.
RELEASE_WAIT_S = 2.0

_BIG = """
local BASE = 100000000000000
local function big(s)
  local l, i = {}, #s
  while i > 0 do
    local j = i - 13
    if j < 1 then j = 1 end
    l[#l + 1] = tonumber(string.sub(s, j, i))
    i = j - 1
  end
  if #l == 0 then l[1] = 0 end
  return l
end
local function cmp(a, b)
  for k = math.max(#a, #b), 1, -1 do
    local x, y = a[k] or 0, b[k] or 0
    if x ~= y then
      if x < y then return -1 end
      return 1
    end
  end
  return 0
end
local function add(a, b)
  local r, c = {}, 0
  for k = 1, math.max(#a, #b) do
    local s = (a[k] or 0) + (b[k] or 0) + c
    if s >= BASE then r[k] = s - BASE; c = 1 else r[k] = s; c = 0 end
  end
  if c > 0 then r[#r + 1] = c end
  return r
end
local function sub(a, b)
  local r, c = {}, 0
  for k = 1, #a do
    local s = a[k] - (b[k] or 0) - c
    if s < 0 then r[k] = s + BASE; c = 1 else r[k] = s; c = 0 end
  end
  return r
end
local function str(a)
  local n = #a
  while n > 1 and a[n] == 0 do n = n - 1 end
  local parts = {string.format('%.0f', a[n])}
  for k = n - 1, 1, -1 do parts[#parts + 1] = string.format('%014.0f', a[k]) end
  return table.concat(parts)
end
"""

# Steps of generation ARGV[g] written meanwhile, ARGV[g + 1] of them, told along with the
# next script for the mirror (so that telling costs no call of its own under load).
_TOLD = """
local function told(g)
  if ARGV[g] ~= '' and redis.call('HGET', KEYS[1], 'gen') == ARGV[g] then
    local n = tonumber(redis.call('HGET', KEYS[1], 'n')) - tonumber(ARGV[g + 1])
    if n < 0 then n = 0 end
    redis.call('HSET', KEYS[1], 'n', n)
  end
end
"""

# Reserve ARGV[1] wei: {'ok', gen, balance after} | {'short', balance} | {'miss'} |
# {'closed'}. ARGV[3], ARGV[4]: steps written, as _TOLD.
RESERVE = _BIG + _TOLD + """
told(3)
local h = redis.call('HMGET', KEYS[1], 'bal', 'gen', 'closed', 'n')
if not h[2] then return {'miss'} end
if h[3] == '1' then return {'closed'} end
local bal, amount = big(h[1]), big(ARGV[1])
if cmp(bal, amount) < 0 then return {'short', h[1]} end
local after = str(sub(bal, amount))
redis.call('HSET', KEYS[1], 'bal', after, 'n', tonumber(h[4]) + 1, 't', ARGV[2])
return {'ok', h[2], after}
"""

# Give back ARGV[2] wei to generation ARGV[1] (a closing mirror too: its steps are
# waited for): 1, or 0 when that generation is gone. ARGV[4], ARGV[5]: as _TOLD.
REFUND = _BIG + _TOLD + """
told(4)
local h = redis.call('HMGET', KEYS[1], 'bal', 'gen', 'n')
if h[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'bal', str(add(big(h[1]), big(ARGV[2]))),
           'n', tonumber(h[3]) + 1, 't', ARGV[3])
return 1
"""

# Steps written: for each key, ARGV has its generation and how many.
WRITTEN = """
for i, key in ipairs(KEYS) do
  local h = redis.call('HMGET', key, 'gen', 'n')
  if h[1] == ARGV[2 * i - 1] then
    local n = tonumber(h[2]) - tonumber(ARGV[2 * i])
    if n < 0 then n = 0 end
    redis.call('HSET', key, 'n', n)
  end
end
return 1
"""

# A new mirror (ARGV: gen, balance, the generation PostgreSQL names, now), unless the
# one PostgreSQL names is there: 1 made, 0 already there.
INSTALL = """
local current = redis.call('HGET', KEYS[1], 'gen')
if current and ARGV[3] ~= '' and current == ARGV[3] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'bal', ARGV[2], 'gen', ARGV[1], 'n', 0, 'closed', 0,
           't', ARGV[4])
return 1
"""

# Close generation ARGV[1]: its steps not yet written, or -1 when it is not there.
CLOSE = """
local h = redis.call('HMGET', KEYS[1], 'gen', 'n')
if h[1] ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'closed', 1)
return tonumber(h[2])
"""

# Drop generation ARGV[1]: 1, or 0 when it was not there.
DROP = """
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""


def key(account_id: int) -> str:
    return KEY.format(account_id)


def new_generation() -> str:
    return secrets.token_hex(8)


def now_ms() -> str:
    return str(int(time.time() * 1000))


_client = None


def _redis():
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1.0,
                                       socket_connect_timeout=1.0)
    return _client


def till_release(account_id: int, *, wait_s: float = RELEASE_WAIT_S) -> None:
    """The first half of taking an account's money back from the till, before its row is
    locked: close the mirror PostgreSQL names, and wait until the steps taken on it are
    written (they need the row). A no-op for an account that is not mirrored."""
    from accounts.models import Account

    if not settings.REDIS_URL:  # no Redis, no mirror
        return
    gen = Account.objects.filter(pk=account_id).values_list("till", flat=True).first()
    if not gen:
        return
    try:
        client = _redis()
        waiting = client.eval(CLOSE, 1, key(account_id), gen)
        deadline = time.monotonic() + wait_s
        while waiting > 0 and time.monotonic() < deadline:
            time.sleep(0.002)
            left = client.hget(key(account_id), "n")
            waiting = int(left) if left is not None else 0
        if waiting > 0:
            log.warning("till of account %s taken back with %s steps unwritten",
                        account_id, waiting)
            _count("release_unwritten")
    except Exception as exc:  # Redis away: the row's generation is cleared all the same
        log.warning("till of account %s taken back without Redis: %s", account_id, exc)


def till_detach(account) -> None:
    """The second half, under the account's row lock: PostgreSQL stops naming the
    mirror's generation (so nothing written for it moves money any more) and the mirror
    goes. Saves `account.till`."""
    gen, account.till = account.till, ""
    type(account).objects.filter(pk=account.pk).update(till="")
    try:
        _redis().eval(DROP, 1, key(account.pk), gen)
    except Exception as exc:  # left behind: never used (its generation is not named)
        log.warning("till of account %s not dropped: %s", account.pk, exc)
    _count("released")


def _count(event: str, amount: int = 1) -> None:
    from observability.metrics import count_till

    count_till(event, amount)


def till_reconcile(*, idle_s: float | None = None, stuck_s: float = 30.0) -> dict[str, int]:
    """The periodic check of every mirror (the beat's `till_reconcile`):
      * idle longer than `idle_s` (settings.GATEWAY_TILL_IDLE_S): taken back, so Redis
        holds only the accounts in use and PostgreSQL is exact for the rest;
      * steps unwritten for longer than `stuck_s` (a process died between its step and
        its write): taken back; what those steps reserved was never written, so the
        user is not charged for it (the platform bears it) and the next mirror starts
        from PostgreSQL's figure;
      * quiet (nothing unwritten) and off PostgreSQL's balance: taken back and counted
        (`drift`), which the tests assert never happens;
      * not named by PostgreSQL: dropped.
    Returns the counts."""
    from django.db import transaction

    from accounts.models import Account

    idle_s = settings.GATEWAY_TILL_IDLE_S if idle_s is None else idle_s
    counts = {"mirrors": 0, "idle": 0, "stuck": 0, "drift": 0, "orphan": 0}
    client = _redis()
    now = time.time() * 1000
    for raw in client.scan_iter(match=PATTERN, count=500):
        name = raw.decode()
        account_id = int(name.rsplit(":", 1)[1])
        fields = {k.decode(): v.decode() for k, v in client.hgetall(name).items()}
        if "gen" not in fields:
            continue
        counts["mirrors"] += 1
        age_ms = now - int(fields.get("t", 0))
        unwritten = int(fields.get("n", 0))
        row = Account.objects.filter(pk=account_id).values_list("till", "balance_wei").first()
        if client.hget(name, "t") != fields.get("t", "").encode():
            continue  # it moved while being looked at: the next round sees it
        if row is None or row[0] != fields["gen"]:
            client.eval(DROP, 1, name, fields["gen"])
            counts["orphan"] += 1
            continue
        reason = None
        if unwritten and age_ms > stuck_s * 1000:
            reason = "stuck"
        elif not unwritten and int(fields["bal"]) != int(row[1]):
            reason = "drift"
            log.error("till of account %s says %s wei, PostgreSQL %s", account_id,
                      fields["bal"], row[1])
        elif not unwritten and age_ms > idle_s * 1000:
            reason = "idle"
        if reason is None:
            continue
        counts[reason] += 1
        till_release(account_id, wait_s=0 if reason == "stuck" else RELEASE_WAIT_S)
        with transaction.atomic():
            account = Account.objects.select_for_update().get(pk=account_id)
            if account.till == fields["gen"]:
                till_detach(account)
    for reason in ("stuck", "drift"):
        if counts[reason]:
            _count(f"reconcile_{reason}", counts[reason])
    return counts


__all__ = ["CLOSE", "DROP", "INSTALL", "REFUND", "RESERVE", "WRITTEN", "key",
           "new_generation", "now_ms", "till_detach", "till_reconcile",
           "till_release"]
