"""API keys looked up from the event loop: one SQL query on the gateway's connections for
the key, its user's standing and its account (gateway.conn), checked by the
same rules as accounts.selectors.api_key_authenticate; through that function on the
gateway's threads where there is no PostgreSQL.

The key comes back as an accounts.ApiKey with `gateway_account` = (account id, tier), or
None for a user whose account is not made yet; its `user` is not loaded.

Reuse (`reuse=True`, the billed endpoints): a key found is kept in the process for
GATEWAY_KEY_REUSE_MS and served again without the query. What it may be used for in that
time is bounded by the money: the reservation's statement (gateway.books.RESERVE) moves
money only while the key is usable (not revoked, not expired, its user active) and
answers a 401 otherwise, dropping the kept key. So a key revoked a moment ago can still
get a 400, a 429 or its own account's cached answer for that long, never a job nor a
charge. Only keys whose account exists are kept, and only on the one-statement path
(not with the till, whose reservation is in Redis).
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from accounts.models import Account, ApiKey, User
from accounts.selectors import api_key_authenticate, api_key_match, api_key_well_formed
from gateway.conn import pg_pool
from gateway.db import db

_FIELDS = ("id", "name", "prefix", "key_hash", "scopes", "expires_at", "last_used_at",
           "revoked_at", "created_at", "user_id")
LOOKUP = f"""
SELECT {", ".join(f"k.{name}" for name in _FIELDS)}, u.is_active, a.id, a.tier
  FROM {ApiKey._meta.db_table} k
  JOIN {User._meta.db_table} u ON u.id = k.user_id
  LEFT JOIN {Account._meta.db_table} a ON a.user_id = k.user_id
 WHERE k.prefix = %s
"""
# accounts.services.api_key_mark_used, as one statement: of racing processes one writes.
MARK_USED = f"""
UPDATE {ApiKey._meta.db_table} SET last_used_at = %(now)s
 WHERE id = %(id)s AND (last_used_at IS NULL OR last_used_at < %(before)s)
"""


def _key(row) -> ApiKey:
    key = ApiKey(**dict(zip(_FIELDS, row[:len(_FIELDS)], strict=True)))
    key._state.adding, key._state.db = False, "default"
    key.user_active = row[len(_FIELDS)]
    account_id, tier = row[len(_FIELDS) + 1:]
    key.gateway_account = (account_id, tier) if account_id is not None else None
    return key


def _with_account(key: ApiKey | None) -> ApiKey | None:
    if key is not None:
        account = getattr(key.user, "account", None)
        key.gateway_account = (account.pk, account.tier) if account is not None else None
    return key


# raw key -> (when it was read, the key); never more than KEPT_MAX.
_kept: dict[str, tuple[float, ApiKey]] = {}
KEPT_MAX = 10_000


def api_key_forget(key_id: int) -> None:
    """Drop a kept key (its reservation found it unusable)."""
    for raw in [raw for raw, (_, key) in _kept.items() if key.pk == key_id]:
        _kept.pop(raw, None)


def _reused(raw: str) -> ApiKey | None:
    kept = _kept.get(raw)
    if kept is None:
        return None
    read_at, key = kept
    if (time.monotonic() - read_at) * 1000 < settings.GATEWAY_KEY_REUSE_MS \
            and key.is_usable(timezone.now()):
        return key
    _kept.pop(raw, None)
    return None


async def api_key_lookup(raw: str | None, *, reuse: bool = False) -> ApiKey | None:
    """The usable key that `raw` is, or None; records its use at most once a minute.
    `reuse`: a key read in the last GATEWAY_KEY_REUSE_MS may be served without a query
    (only for requests whose money the reservation guards; the module's docstring)."""
    if not api_key_well_formed(raw):
        return None
    reuse = reuse and settings.GATEWAY_KEY_REUSE_MS > 0 and not settings.GATEWAY_TILL
    if reuse:
        found = _reused(raw)
        if found is not None:
            return found
    pool = pg_pool()
    if pool is None:
        return await db(lambda: _with_account(api_key_authenticate(raw)))
    now = timezone.now()
    async with pool.connection() as conn:
        cursor = await conn.execute(LOOKUP, (raw[:ApiKey.PREFIX_LENGTH],))
        candidates = [_key(row) for row in await cursor.fetchall()]
        found = api_key_match(raw, candidates, now=now, active=lambda key: key.user_active)
        if found is None:
            return None
        interval = timedelta(seconds=settings.ACCOUNTS_KEY_LAST_USED_INTERVAL_S)
        if found.last_used_at is None or now - found.last_used_at >= interval:
            cursor = await conn.execute(MARK_USED, {"now": now, "id": found.pk,
                                                    "before": now - interval})
            if cursor.rowcount:
                found.last_used_at = now
    if reuse and found.gateway_account is not None:
        if len(_kept) >= KEPT_MAX:
            _kept.clear()
        _kept[raw] = (time.monotonic(), found)
    return found
