"""Jobs through the whole marketplace: anvil, our contracts, real host processes running
the bundled model, and the client's runner."""

import asyncio
import threading

import pytest
from web3 import AsyncWeb3

from marketplace.chain.connect import http_provider
from marketplace.client.errors import ClientError
from marketplace.client.refunds import refund_abandoned
from marketplace.models import AttemptState, Job, JobState, VerificationRecord, VerificationState
from marketplace.services import JobSpec, run_job
from marketplace.wallet import platform_chain
from tests.conftest import MODEL

pytestmark = pytest.mark.django_db(transaction=True)
FEE_BPS = 250


async def balances(chain, *addresses):
    return [await chain.withdrawable(a) for a in addresses]


async def test_a_job_completes_and_every_wei_is_where_it_belongs(network):
    (cheap, dear) = network.start_hosts({"host-1": 10**9, "host-2": 3 * 10**9})
    chain = await platform_chain()
    treasury = network.anvil.keys["treasury"].address
    before = await balances(chain, cheap.address, treasury, chain.address)
    seen = []

    async def on_token(index, text):
        seen.append((index, text))

    outcome = await run_job(JobSpec(model=MODEL, prompt="Give one tip for writing clearly.",
                                    max_tokens=32, temperature=0.0), on_token=on_token)
    assert outcome.host == cheap.address  # same latency and record: the cheaper one
    assert outcome.text == "".join(t for _, t in seen)
    assert [i for i, _ in seen] == list(range(len(seen)))
    job = await Job.objects.aget(pk=outcome.job_id)
    assert job.state == JobState.COMPLETED
    attempt = await job.attempts.aget()
    payment = attempt.tokens_billed * 10**9
    fee = payment * FEE_BPS // 10000
    escrow = 32 * 10**9
    after = await balances(chain, cheap.address, treasury, chain.address)
    assert after[0] - before[0] == payment - fee
    assert after[1] - before[1] == fee
    assert after[2] - before[2] == escrow - payment
    assert outcome.cost_wei == payment == int(job.paid_wei)
    assert attempt.tokens_billed == outcome.tokens
    assert len(outcome.tx_hashes) == 2  # post and accept; the host claims and submits
    # The verifier re-scored every token the host reported, and found it the model's.
    record = await VerificationRecord.objects.aget(attempt=attempt)
    assert record.state == VerificationState.PASSED and outcome.verified
    assert record.positions == outcome.tokens == len(record.tokens)
    assert [t[2] for t in record.tokens] == [text for _, text in seen]
    assert record.mean_logprob_error < 0.1 and record.cpu_ms > 0


async def test_a_host_killed_mid_stream_is_replaced_and_its_text_taken_back(network):
    first, second = network.start_hosts({"host-1": 10**9, "host-2": 2 * 10**9})
    chain = await platform_chain()
    seen: list[str] = []
    rewound: list[int] = []
    killed = threading.Event()

    async def on_token(index, text):
        assert index == len(seen)  # no gap and no repeat, whoever sends
        seen.append(text)
        if len(seen) == 6 and not killed.is_set():
            killed.set()
            first.kill()

    async def on_state(state, detail):
        if state == "REWOUND":
            rewound.append(detail["index"])
            del seen[detail["index"]:]

    before = await chain.withdrawable(chain.address)
    outcome = await run_job(JobSpec(model=MODEL, prompt="Explain what a river delta is.",
                                    max_tokens=48, temperature=0.0), on_token=on_token,
                            on_state=on_state)
    assert killed.is_set()
    assert outcome.host == second.address
    # The dead host's text was never verified: the reader saw it taken back, and the
    # answer is the second host's alone.
    assert rewound == [0]
    assert outcome.text == "".join(seen)
    job = await Job.objects.aget(pk=outcome.job_id)
    dead, alive = [a async for a in job.attempts.order_by("number")]
    assert dead.state == AttemptState.ABANDONED and dead.host_address == first.address
    assert dead.tokens >= 6
    assert alive.start_index == 0
    assert outcome.tokens == alive.tokens == job.tokens
    assert job.text == outcome.text
    # Charged once: only the host that finished is paid, for the tokens it delivered.
    assert outcome.cost_wei == alive.tokens_billed * 2 * 10**9
    # The dead host's escrow comes back through the timeout path after its deadline.
    w3 = AsyncWeb3(http_provider(network.anvil.url))
    await w3.provider.make_request("evm_increaseTime", [121])
    await w3.provider.make_request("evm_mine", [])
    await w3.provider.disconnect()
    assert await refund_abandoned(chain) == 1
    await dead.arefresh_from_db()
    assert dead.state == AttemptState.REFUNDED
    after = await chain.withdrawable(chain.address)
    second_escrow = 48 * 2 * 10**9
    assert after - before == int(dead.escrow_wei) + second_escrow - int(outcome.cost_wei)
    node = await chain.get_node(first.address)
    assert node.failed == 1


async def test_no_host_for_the_model_fails_clearly_and_spends_nothing(network):
    network.start_hosts({"host-1": 10**9})
    chain = await platform_chain()
    balance = await chain.w3.eth.get_balance(chain.address)
    with pytest.raises(ClientError) as info:
        await run_job(JobSpec(model="no-such-model", prompt="Hello", max_tokens=8))
    assert info.value.code == "NO_HOSTS_AVAILABLE"
    assert await chain.w3.eth.get_balance(chain.address) == balance
    job = await Job.objects.aget()
    assert (job.state, job.error_code) == (JobState.FAILED, "NO_HOSTS_AVAILABLE")


async def test_a_cancelled_job_stops_and_pays_only_for_what_arrived(network):
    network.start_hosts({"host-1": 10**9})
    cancel = asyncio.Event()
    seen = []

    async def on_token(index, text):
        seen.append(text)
        if len(seen) == 4:
            cancel.set()

    outcome = await run_job(JobSpec(model=MODEL, prompt="Write a long story about a dragon.",
                                    max_tokens=200, temperature=0.0), on_token=on_token,
                            cancel=cancel)
    assert outcome.cancelled
    assert 4 <= outcome.tokens < 200
    assert outcome.text == "".join(seen)
    assert outcome.cost_wei == outcome.tokens * 10**9


class JunkBackend:
    """A host that answers every request with the same few words over and over: a
    failure the real model cannot be made to produce on demand, so it stands at the
    model boundary only; the host, chain and client around it are all real."""

    name = "junk"
    model_id = MODEL

    def stream(self, request, cancel):
        for i in range(request.max_tokens):
            if cancel.is_set():
                return
            yield " buy now" if i % 2 else " cheap"


async def test_a_junk_host_is_disputed_and_the_job_succeeds_elsewhere(network):
    from aiohttp import web

    from marketplace.host.cid import ResultStore
    from marketplace.host.server import HostConfig, HostNode
    from tests.conftest import free_port

    (honest,) = network.start_hosts({"host-2": 2 * 10**9})
    port = free_port()
    junk = HostNode(backend=JunkBackend(), chain=network.anvil.chain("host-3"),
                    store=ResultStore(network.tmp / "junk"),
                    config=HostConfig(public_url=f"http://127.0.0.1:{port}",
                                      price_per_token_wei=10**9, withdraw_every_s=3600))
    runner = web.AppRunner(junk.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        seen: list[str] = []
        states = []

        async def on_token(index, text):
            del seen[index:]
            seen.append(text)

        async def on_state(state, detail):
            states.append(state)
            if state == "REWOUND":
                del seen[detail["index"]:]

        outcome = await run_job(JobSpec(model=MODEL, prompt="Suggest a name for a cat.",
                                        max_tokens=24, temperature=0.0),
                                on_token=on_token, on_state=on_state)
        assert outcome.host == honest.address
        assert "buy now" not in outcome.text
        assert outcome.text == "".join(seen)
        assert "DISPUTED" in states and "REWOUND" in states
        job = await Job.objects.aget(pk=outcome.job_id)
        bad, good = [a async for a in job.attempts.order_by("number")]
        assert bad.host_address == junk.address and bad.state == AttemptState.DISPUTED
        assert bad.quality < 0.7 <= good.quality
        chain = await platform_chain()
        assert (await chain.get_node(junk.address)).disputed == 1
        assert outcome.cost_wei == good.tokens_billed * 2 * 10**9
    finally:
        await runner.cleanup()
