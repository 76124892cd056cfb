"""A batch from the HTTP API to its webhook, every part real: a Celery worker process on
Redis, host processes serving the model on the devnet, and an HTTP server of the test
receiving the signed webhook."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.models import EntryKind, LedgerEntry
from accounts.selectors import ledger_invariant_violations
from accounts.services import account_get_or_create, account_set_tier
from gateway.models import BatchItem, ItemState
from marketplace.models import DeadLetter, Job, WebhookDelivery
from marketplace.webhooks import webhook_verify
from tests.conftest import MODEL
from tests.gateway.batchkit import celery_worker, nonce
from tests.gateway.conftest import network_env
from tests.marketplace.receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = 10**9


@pytest.fixture(autouse=True)
def premium(alice):
    """Polling a batch twice a second is more than the free tier's 10 requests a minute."""
    account_set_tier(account_get_or_create(alice.user), tier="premium")


@pytest.fixture
def receiver():
    made = Receiver(failures=1)  # the first delivery fails: the webhook is retried
    yield made
    made.close()


async def submit(key, count: int, **fields) -> dict:
    tag = nonce()
    body = {"requests": [{"model": MODEL, "prompt": f"Write one short line about the number "
                          f"{i} ({tag}).", "max_tokens": 8, "temperature": 0.0}
                         for i in range(count)], **fields}
    response = await AsyncClient().post("/v1/batch", data=body,
                                        content_type="application/json", headers=key.headers)
    assert response.status_code == 202, response.content
    return response.json()


async def poll_until_completed(key, batch_id: str, *, within: float) -> dict:
    deadline = time.monotonic() + within
    while True:
        body = (await AsyncClient().get(f"/v1/batch/{batch_id}", headers=key.headers)).json()
        if body["state"] == "completed" or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.5)


def settle_entries(item: BatchItem) -> int:
    return LedgerEntry.objects.filter(kind=EntryKind.SETTLE,
                                      reference__startswith=item.reference).count()


async def test_a_batch_runs_on_real_hosts_and_its_signed_webhook_arrives_once(
        network, alice, receiver, tmp_path):
    network.start_hosts({"host-1": PRICE, "host-2": PRICE})
    with celery_worker(tmp_path / "worker.log", env=network_env(network)) as worker:
        made = await submit(alice, 5, webhook_url=receiver.url)
        body = await poll_until_completed(alice, made["id"], within=180)
        assert body["state"] == "completed", worker.output()[-3000:]
        # The first delivery was refused; the retry comes after the 10 s backoff.
        arrived = await asyncio.to_thread(receiver.arrived.wait, 60)
        assert arrived, worker.output()[-3000:]

    assert body["counts"] == {"total": 5, "queued": 0, "running": 0, "succeeded": 5,
                              "failed": 0}
    for index, item in enumerate(body["items"]):
        assert item["index"] == index and item["state"] == "succeeded"
        assert item["text"] and 0 < item["tokens"] <= 8 and int(item["cost"]) > 0
        assert item["error"] is None and item["job_id"]
    assert int(body["cost"]) == sum(int(i["cost"]) for i in body["items"])
    assert body["finished_at"] >= body["started_at"] >= body["created"]

    (failed, _), (headers, raw) = receiver.requests
    assert webhook_verify(secret=made["webhook_secret"],
                          header=headers["X-Inkmarket-Signature"], body=raw)
    assert not webhook_verify(secret="whsec_wrong", header=headers["X-Inkmarket-Signature"],
                              body=raw)
    key = f"batch.completed:{made['id']}"
    assert failed["X-Inkmarket-Idempotency-Key"] == headers["X-Inkmarket-Idempotency-Key"] == key
    payload = json.loads(raw)
    assert payload["event"] == "batch.completed"
    assert payload["batch"]["id"] == made["id"] and payload["batch"]["state"] == "completed"
    assert payload["batch"]["counts"] == {"total": 5, "succeeded": 5, "failed": 0}
    assert payload["batch"]["cost_wei"] == body["cost"]
    assert await WebhookDelivery.objects.acount() == 1

    items = [i async for i in BatchItem.objects.filter(batch_id=made["id"])]
    assert await Job.objects.filter(pk__in=[i.job_id for i in items]).acount() == 5
    for item in items:
        assert await sync_to_async(settle_entries)(item) == 1
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_a_worker_killed_mid_batch_leaves_every_item_done_once_after_a_restart(
        network, alice, tmp_path):
    """SIGKILL takes the worker with items in flight: their tasks were never acknowledged,
    so the broker delivers them again to the next worker (and the sweep finds their
    items too), which waits for the dead one's claims to run out, closes what the dead
    worker left, and finishes every item once."""
    network.start_hosts({"host-1": PRICE})
    env = {**network_env(network), "BATCH_ITEM_TIMEOUT_S": "20", "BATCH_LEASE_GRACE_S": "2",
           "CELERY_VISIBILITY_TIMEOUT_S": "5", "BATCH_SWEEP_INTERVAL_S": "5"}
    with celery_worker(tmp_path / "worker-1.log", env=env) as worker:
        made = await submit(alice, 8)
        deadline = time.monotonic() + 120
        while not await BatchItem.objects.filter(batch_id=made["id"],
                                                 state=ItemState.SUCCEEDED).aexists():
            assert time.monotonic() < deadline, worker.output()[-3000:]
            await asyncio.sleep(0.05)
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
    left = await BatchItem.objects.filter(batch_id=made["id"]).exclude(
        state=ItemState.SUCCEEDED).acount()
    assert left > 0  # the kill did land mid-batch

    with celery_worker(tmp_path / "worker-2.log", env=env, purge=False) as worker:
        body = await poll_until_completed(alice, made["id"], within=180)
        assert body["state"] == "completed", worker.output()[-3000:]

    assert body["counts"]["succeeded"] == 8
    items = [i async for i in BatchItem.objects.filter(batch_id=made["id"])]
    for item in items:
        assert await sync_to_async(settle_entries)(item) == 1, item.index
    assert not await DeadLetter.objects.aexists()
    assert await sync_to_async(ledger_invariant_violations)() == []
