"""A burst of 1,000 queued batch items with short outputs drains with none lost and none
charged twice, and the ledger adds up to the wei.

Every part is a real process: a Celery worker on Redis runs the items through the
gateway's upstream mode against llama-cpp-python's OpenAI-compatible server on the
bundled model (the marketplace's chain makes each item take ~0.4 s of chain work on two
cores, too slow for 1,000 in CI; tests/gateway/test_batch_end_to_end.py runs
batches on the marketplace's hosts). How fast it drains is measured in
bench/bench_batch.py, not here.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.models import Account, EntryKind, LedgerEntry, Reservation, ReservationState
from accounts.selectors import ledger_invariant_violations
from accounts.services import (
    account_get_or_create,
    account_set_tier,
    api_key_create,
    user_create,
)
from gateway.models import Batch, BatchItem, BatchState, GatewayRequest, ItemState
from marketplace.webhooks import webhook_verify
from tests.conftest import MODEL, llama_server_running
from tests.gateway.batchkit import celery_worker, in_thread, nonce
from tests.marketplace.receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)
BATCHES, PER_BATCH = 10, 100
PRICE = 10**9


@pytest.fixture
def llama_server(tmp_path):
    with llama_server_running(tmp_path / "llama-server.log",
                              "--interrupt_requests", "False") as url:
        yield url


@pytest.fixture
def caller(transactional_db):
    user = user_create(username="burst", password="a-long-password-1")
    # Premium: a thousand requests a minute, room to poll while the burst drains.
    account_set_tier(account_get_or_create(user), tier="premium")
    made = api_key_create(user=user, name="burst", scopes=["batch"])
    return user, {"X-API-Key": made.raw}


@pytest.fixture(autouse=True)
def close_gateway_connections():
    yield
    from gateway.db import gateway_db_close

    gateway_db_close()


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)


def drained(ids: list[str]) -> bool:
    return Batch.objects.filter(pk__in=ids, state=BatchState.COMPLETED).count() == len(ids)


def settles_per_item() -> Counter:
    """Settle entries per batch item, whichever attempt's reference they were made under."""
    counts: Counter = Counter()
    for reference in LedgerEntry.objects.filter(
            kind=EntryKind.SETTLE, reference__startswith="batch:").values_list(
            "reference", flat=True):
        counts[int(reference.split(":")[1])] += 1
    return counts


async def test_a_burst_of_a_thousand_batch_items_drains_with_none_lost_or_charged_twice(
        llama_server, caller, receiver, tmp_path):
    user, headers = caller
    account = await sync_to_async(account_get_or_create)(user)
    balance_before = account.balance_wei
    env = {"GATEWAY_UPSTREAM_URL": llama_server, "GATEWAY_UPSTREAM_PRICE_WEI": str(PRICE),
           "GATEWAY_DB_THREADS": "4"}
    tag = nonce()
    # Two task threads of four items each: eight items in flight, as in the benchmark.
    with celery_worker(tmp_path / "worker.log", env=env, concurrency=2) as worker:
        made = []
        for number in range(BATCHES):
            # Prompts the raw completion continues (an instruct model given a bare
            # instruction without its chat template often ends at once, with no tokens).
            body = {"requests": [{"model": MODEL, "prompt": f"Item {tag}-{n}. Counting up: "
                                  f"{n}, {n + 1},", "max_tokens": 3, "temperature": 0.0}
                                 for n in range(number * PER_BATCH, (number + 1) * PER_BATCH)],
                    "webhook_url": receiver.url}
            response = await AsyncClient().post("/v1/batch", data=body, headers=headers,
                                                content_type="application/json")
            assert response.status_code == 202, response.content
            made.append(response.json())
        ids = [m["id"] for m in made]
        deadline = time.monotonic() + 600
        while not await in_thread(lambda: drained(ids)):
            assert worker.proc.poll() is None, worker.output()[-3000:]
            assert time.monotonic() < deadline, worker.output()[-3000:]
            await asyncio.sleep(1)
        await asyncio.to_thread(wait_for, lambda: len(receiver.requests) >= BATCHES, 60)

    # None lost: every item of every batch succeeded, with its text.
    items = [i async for i in BatchItem.objects.filter(batch_id__in=ids)]
    assert len(items) == BATCHES * PER_BATCH
    assert Counter(i.state for i in items) == {ItemState.SUCCEEDED: BATCHES * PER_BATCH}
    assert all(i.text and 0 < i.tokens <= 3 and i.cost_wei > 0 for i in items), [
        (i.index, i.text, i.tokens, i.cost_wei) for i in items if not i.tokens][:5]
    # None charged twice: one settle per item, one request record per item.
    settles = await sync_to_async(settles_per_item)()
    assert set(settles) == {i.pk for i in items} and set(settles.values()) == {1}
    records = GatewayRequest.objects.filter(user=user, endpoint="batch")
    assert await records.acount() == BATCHES * PER_BATCH
    assert not await Reservation.objects.filter(state=ReservationState.HELD).aexists()
    # The money adds up: the ledger, and the balance against the items' own costs.
    assert await sync_to_async(ledger_invariant_violations)() == []
    account = await Account.objects.aget(user=user)
    assert account.held_wei == 0
    assert account.balance_wei == balance_before - sum(i.cost_wei for i in items)
    batches = [b async for b in Batch.objects.filter(pk__in=ids)]
    assert sum(b.cost_wei for b in batches) == sum(i.cost_wei for i in items)
    assert {(b.succeeded, b.failed) for b in batches} == {(PER_BATCH, 0)}
    # And each batch told its webhook once, signed.
    secrets = {m["id"]: m["webhook_secret"] for m in made}
    assert sorted(h["X-Inkmarket-Idempotency-Key"] for h, _ in receiver.requests) == sorted(
        f"batch.completed:{i}" for i in ids)
    for headers_, raw in receiver.requests:
        batch_id = headers_["X-Inkmarket-Idempotency-Key"].split(":", 1)[1]
        assert webhook_verify(secret=secrets[batch_id],
                              header=headers_["X-Inkmarket-Signature"], body=raw)
