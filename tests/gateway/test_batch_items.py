"""Batch items run through the real marketplace (anvil, host processes serving the model):
claimed once, charged once whatever is retried, failures reported per item, retries
bounded, the batch finished exactly once."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from accounts.models import EntryKind, LedgerEntry, Reservation, ReservationState
from accounts.selectors import ledger_invariant_violations
from accounts.services import (
    account_get_or_create,
    api_key_revoke,
    balance_adjust,
    balance_reserve,
)
from accounts.tiers import price_for
from gateway import batch as batch_services
from gateway.batch import ItemRequest, batch_item_process, item_reference
from gateway.inference import InferenceResult, inference_run
from gateway.models import Batch, BatchItem, BatchState, ItemState
from gateway.tasks import batch_items_run
from marketplace.models import DeadLetter, Job, WebhookDelivery
from tests.conftest import MODEL
from tests.gateway.batchkit import in_thread, nonce, purge_broker

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = 10**9


@pytest.fixture(autouse=True)
def no_queued_tasks():
    """Items created here are run by the test itself; what batch_create queued for a
    worker is dropped so no later worker test picks it up."""
    yield
    purge_broker()


@pytest.fixture
def alice_key(alice):
    return alice.key


def create(api_key, count: int = 1, *, max_tokens: int = 4, **kwargs) -> Batch:
    tag = nonce()
    requests = [ItemRequest(model=MODEL, prompt=f"Say hello to friend number {i} ({tag}).",
                            max_tokens=max_tokens, temperature=0.0) for i in range(count)]
    return batch_services.batch_create(api_key=api_key, requests=requests, **kwargs).batch


def expire_lease(item_id: int) -> None:
    BatchItem.objects.filter(pk=item_id).update(
        lease_until=timezone.now() - timedelta(seconds=1))


def charges(item: BatchItem) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(kind=EntryKind.SETTLE,
                                           reference__startswith=item.reference))


async def test_an_item_run_twice_at_once_and_again_later_runs_and_is_charged_once(
        network, alice_key):
    network.start_hosts({"host-1": PRICE})
    batch = await sync_to_async(create)(alice_key)
    item = await BatchItem.objects.aget(batch=batch)

    first, second = await asyncio.gather(batch_item_process(item_id=item.pk),
                                         batch_item_process(item_id=item.pk))
    assert sorted([first.status, second.status]) == ["held", "succeeded"]
    # The task itself, delivered again (a redelivery after a lost ack): nothing to do.
    summary = await in_thread(lambda: batch_items_run.apply(args=([item.pk],)).get())
    assert summary == {"skipped": 1}

    await item.arefresh_from_db()
    assert item.state == ItemState.SUCCEEDED and item.attempts == 1
    assert item.text and 0 < item.tokens <= 4
    assert await Job.objects.filter(pk=item.job_id).acount() == 1
    assert await Job.objects.acount() == 1
    (charge,) = await sync_to_async(charges)(item)
    assert charge.amount_wei == item.cost_wei == price_for("free", PRICE, item.tokens).charge_wei
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_an_item_whose_worker_died_after_the_charge_is_not_run_or_charged_again(
        network, alice_key):
    network.start_hosts({"host-1": PRICE})
    batch = await sync_to_async(create)(alice_key)
    item = await BatchItem.objects.aget(batch=batch)
    # Attempt 1 claims the item, runs and is charged, and its worker dies before it can
    # record the result.
    claimed = await sync_to_async(batch_services.batch_item_claim)(item_id=item.pk)
    ran = await inference_run(api_key=alice_key, reference=item_reference(item.pk, 1),
                              endpoint="batch", **batch_services._run_options(claimed))
    await sync_to_async(expire_lease)(item.pk)

    outcome = await batch_item_process(item_id=item.pk)

    assert outcome.status == "succeeded"
    await item.arefresh_from_db()
    assert item.attempts == 2
    assert (item.text, item.tokens, item.cost_wei) == (ran.text, ran.tokens, ran.cost_wei)
    assert str(item.job_id) == ran.job_id
    assert await Job.objects.acount() == 1  # the marketplace ran it once
    assert len(await sync_to_async(charges)(item)) == 1
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_a_hold_left_by_a_worker_that_died_mid_run_is_released_and_charged_once(
        network, alice_key):
    network.start_hosts({"host-1": PRICE})
    batch = await sync_to_async(create)(alice_key)
    item = await BatchItem.objects.aget(batch=batch)
    account = await sync_to_async(account_get_or_create)(alice_key.user)
    before = account.balance_wei
    # Attempt 1 reserved and died before its job ended.
    await sync_to_async(batch_services.batch_item_claim)(item_id=item.pk)
    await sync_to_async(balance_reserve)(account, amount_wei=price_for("free", PRICE, 4)
                                         .charge_wei, reference=item_reference(item.pk, 1))
    await sync_to_async(expire_lease)(item.pk)

    outcome = await batch_item_process(item_id=item.pk)

    assert outcome.status == "succeeded"
    await item.arefresh_from_db()
    states = {r.reference: r.state async for r in Reservation.objects.filter(
        reference__startswith=item.reference)}
    assert states == {item_reference(item.pk, 1): ReservationState.RELEASED,
                      item_reference(item.pk, 2): ReservationState.SETTLED}
    await account.arefresh_from_db()
    assert account.balance_wei == before - item.cost_wei and account.held_wei == 0
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_items_the_balance_cannot_cover_fail_on_their_own_and_the_batch_completes(
        network, alice_key):
    network.start_hosts({"host-1": PRICE})
    account = await sync_to_async(account_get_or_create)(alice_key.user)
    worst = price_for("free", PRICE, 4).charge_wei
    # Enough for one item's worst case and a little more, never for a second one.
    await sync_to_async(balance_adjust)(account, amount_wei=worst + 5 - account.balance_wei,
                                        memo="test: room for one item")
    batch = await sync_to_async(create)(alice_key, 3)
    ids = [pk async for pk in BatchItem.objects.filter(batch=batch).values_list("pk", flat=True)
           .order_by("index")]

    outcomes = [await batch_item_process(item_id=pk) for pk in ids]

    assert [o.status for o in outcomes] == ["succeeded", "failed", "failed"]
    items = [item async for item in BatchItem.objects.filter(batch=batch).order_by("index")]
    assert items[0].state == ItemState.SUCCEEDED and items[0].error_code == ""
    for item in items[1:]:
        assert (item.state, item.error_code) == (ItemState.FAILED, "INSUFFICIENT_FUNDS")
        assert "wei" in item.error_message and item.attempts == 1  # not retried
    await batch.arefresh_from_db()
    assert (batch.state, batch.succeeded, batch.failed) == (BatchState.COMPLETED, 1, 2)
    assert batch.cost_wei == items[0].cost_wei
    assert not await DeadLetter.objects.aexists()  # refused requests are not dead letters
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_queued_items_of_a_revoked_key_fail_with_a_clear_code_and_cost_nothing(
        network, alice_key):
    """The attack: submit a batch, then have the key revoked (it leaked, say) and hope
    the queue goes on running and billing on it."""
    network.start_hosts({"host-1": PRICE})
    account = await sync_to_async(account_get_or_create)(alice_key.user)
    batch = await sync_to_async(create)(alice_key, 2)
    first, second = [pk async for pk in BatchItem.objects.filter(batch=batch)
                     .values_list("pk", flat=True).order_by("index")]
    assert (await batch_item_process(item_id=first)).status == "succeeded"
    await account.arefresh_from_db()
    after_first = account.balance_wei

    await sync_to_async(api_key_revoke)(alice_key)
    assert (await batch_item_process(item_id=second)).status == "failed"

    item = await BatchItem.objects.aget(pk=second)
    assert (item.state, item.error_code) == (ItemState.FAILED, "API_KEY_REVOKED")
    assert not await Reservation.objects.filter(reference__startswith=item.reference).aexists()
    await account.arefresh_from_db()
    assert account.balance_wei == after_first and account.held_wei == 0
    await batch.arefresh_from_db()
    assert (batch.state, batch.succeeded, batch.failed) == (BatchState.COMPLETED, 1, 1)
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_an_item_with_no_host_to_run_it_is_retried_with_backoff_then_dead_lettered(
        network, alice_key, settings):
    settings.BATCH_ITEM_MAX_ATTEMPTS = 2
    settings.BATCH_RETRY_BASE_S = 30
    batch = await sync_to_async(create)(alice_key)  # no host is running
    item = await BatchItem.objects.aget(batch=batch)

    outcome = await batch_item_process(item_id=item.pk)

    assert (outcome.status, outcome.retry_in_s) == ("retry", 30)
    await item.arefresh_from_db()
    assert item.state == ItemState.QUEUED and item.error_code == "NO_HOSTS_AVAILABLE"
    assert timedelta(seconds=25) < item.not_before - timezone.now() <= timedelta(seconds=30)
    assert (await batch_item_process(item_id=item.pk)).status == "skipped"  # not due yet

    await BatchItem.objects.filter(pk=item.pk).aupdate(not_before=timezone.now())
    assert (await batch_item_process(item_id=item.pk)).status == "failed"
    await item.arefresh_from_db()
    assert (item.state, item.attempts, item.error_code) == (ItemState.FAILED, 2,
                                                            "NO_HOSTS_AVAILABLE")
    (dead,) = [d async for d in DeadLetter.objects.all()]
    assert dead.task == batch_services.ITEM_TASK and dead.args == [[item.pk]]
    await batch.arefresh_from_db()
    assert batch.state == BatchState.COMPLETED and batch.failed == 1
    assert await sync_to_async(ledger_invariant_violations)() == []


def test_the_last_two_items_ending_at_once_finish_the_batch_and_send_its_webhook_once(
        alice_key):
    batch = create(alice_key, 2, webhook_url="http://127.0.0.1:9/hook")
    ids = list(batch.items.values_list("pk", flat=True))
    for pk in ids:
        assert batch_services.batch_item_claim(item_id=pk) is not None
    barrier = threading.Barrier(len(ids))
    results = []

    def end(pk):
        from django.db import connection

        try:
            barrier.wait(timeout=10)
            results.append(batch_services.batch_item_succeed(
                item_id=pk, result=InferenceResult(
                    request_id=None, job_id="", text="hi", tokens=1, prompt_tokens=0,
                    model=MODEL, host="h", cost_wei=7, cached=False, finish_reason="stop")))
        finally:
            connection.close()

    threads = [threading.Thread(target=end, args=(pk,)) for pk in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [True, True]
    batch.refresh_from_db()
    assert (batch.state, batch.succeeded, batch.failed, batch.cost_wei) == (
        BatchState.COMPLETED, 2, 0, 14)
    (delivery,) = WebhookDelivery.objects.all()
    assert batch.webhook_id == delivery.pk
    assert delivery.idempotency_key == f"batch.completed:{batch.pk}"
    assert delivery.payload["batch"]["counts"] == {"total": 2, "succeeded": 2, "failed": 0}
    # Recording an end again changes nothing.
    assert not batch_services.batch_item_fail(item_id=ids[0], code="X", message="late")
    assert WebhookDelivery.objects.count() == 1


def test_the_sweep_finds_items_nobody_runs_and_fails_those_that_killed_every_worker(
        alice_key, settings):
    batch = create(alice_key, 3)
    lost, held, dead = batch.items.order_by("index")
    long_ago = timezone.now() - timedelta(seconds=settings.BATCH_STUCK_AFTER_S + 5)
    BatchItem.objects.filter(pk=lost.pk).update(created=long_ago)  # its task was lost
    batch_services.batch_item_claim(item_id=held.pk)
    expire_lease(held.pk)  # its worker died
    BatchItem.objects.filter(pk=dead.pk).update(
        state=ItemState.RUNNING, attempts=settings.BATCH_ITEM_MAX_ATTEMPTS,
        lease_until=timezone.now() - timedelta(seconds=1))  # it killed every worker

    assert batch_services.batch_items_exhausted() == 1
    assert batch_services.batch_items_stuck() == [lost.pk, held.pk]
    dead.refresh_from_db()
    assert (dead.state, dead.error_code) == (ItemState.FAILED, "WORKER_LOST")
    assert DeadLetter.objects.get().args == [[dead.pk]]
