"""The chain's RPC endpoint unreachable for 30 seconds, with jobs running and arriving:
they wait and resume, every wei is where it belongs, and the ledger invariant holds.

Our node sits behind a TCP proxy that the test closes (port and every connection) and
opens again; the host reaches the chain through its own node, as a host elsewhere would.
"""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from accounts.selectors import ledger_invariant_violations
from accounts.services import account_get_or_create
from marketplace import wallet
from marketplace.client import discovery
from marketplace.models import AttemptState, Job, JobState
from tests.ops.conftest import TcpProxy
from writer import services
from writer.models import Generation, Status
from writer.runner import run_generation

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = 10**9
OUTAGE_S = 30


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    """A result cached by an earlier run must not answer this one."""
    settings.CACHES = {name: {**conf, "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
                       for name, conf in settings.CACHES.items()}


@pytest.fixture
def proxy(network, settings):
    through = TcpProxy(urlsplit(network.anvil.url).port)
    through.start()
    settings.CHAIN_RPC = through.url
    wallet._handles.clear()
    discovery.invalidate()
    yield through
    through.close()


async def generation(user, prompt: str) -> Generation:
    return await sync_to_async(services.generation_create)(
        user=user, content_type="blog", style="casual", length="short", prompt=prompt,
        price_cap_wei=PRICE)


async def test_jobs_wait_out_a_chain_outage_and_no_wei_is_lost(network, proxy, alice):
    (host,) = network.start_hosts({"host-1": PRICE})
    direct = network.anvil.chain("platform")  # the test's own view of the chain
    treasury = network.anvil.keys["treasury"].address
    before = [await direct.withdrawable(a) for a in (direct.address, host.address, treasury)]
    account = await sync_to_async(account_get_or_create)(alice)
    balance = account.balance_wei

    # Fixed prompts, each job's own sampling secret: the verifier checks the host's tokens,
    # so whatever the draw, an honest host's result is accepted.
    first = await generation(alice, "Why lighthouses matter.")
    running = asyncio.create_task(run_generation(first.id))
    for _ in range(600):
        if (await Generation.objects.aget(pk=first.id)).status == Status.STREAMING:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the first generation never streamed")
    proxy.stop()
    cut = timezone.now()
    second = await generation(alice, "Why rivers bend.")
    arriving = asyncio.create_task(run_generation(second.id))
    await asyncio.sleep(OUTAGE_S)
    assert not running.done() and not arriving.done()  # both are waiting for the chain
    proxy.start()
    back = timezone.now()
    await asyncio.wait_for(asyncio.gather(running, arriving), timeout=180)

    generations = [await Generation.objects.aget(pk=g.id) for g in (first, second)]
    for done in generations:
        assert done.status == Status.DONE, done.error_message
        assert done.tokens > 0
    jobs = [await Job.objects.aget(pk=g.job_id) for g in generations]
    assert all(job.state == JobState.COMPLETED for job in jobs)
    assert all(job.finished_at > back for job in jobs)  # they resumed once it was back
    assert jobs[1].created > cut
    attempts = await sync_to_async(lambda: [a for job in jobs for a in job.attempts.all()])()
    # One attempt each, accepted: nothing posted twice, nothing left in escrow.
    assert [a.state for a in attempts] == [AttemptState.ACCEPTED] * 2

    escrow_balance, escrowed, owed = await direct.escrow_totals()
    assert escrow_balance == escrowed + owed
    after = [await direct.withdrawable(a) for a in (direct.address, host.address, treasury)]
    paid = sum(int(a.paid_wei) for a in attempts)
    assert after[0] - before[0] == sum(int(a.escrow_wei) for a in attempts) - paid
    assert (after[1] - before[1]) + (after[2] - before[2]) == paid

    assert await sync_to_async(ledger_invariant_violations)() == []
    await account.arefresh_from_db()
    assert account.held_wei == 0
    assert account.balance_wei == balance - sum(int(g.cost_wei) for g in generations)
    await direct.close()
