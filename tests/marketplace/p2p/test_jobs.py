"""A job through hosts found on the DHT: real host processes on the bundled model announce
themselves, the registry's list call is never made, and escrow pays the host."""

from __future__ import annotations

import asyncio

import pytest

from marketplace.chain.contracts import Chain
from marketplace.client import discovery
from marketplace.models import Job, JobState
from marketplace.p2p import client as p2p
from marketplace.services import JobSpec, run_job
from marketplace.wallet import platform_chain
from tests.conftest import MODEL

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


async def test_a_job_runs_on_a_host_found_on_the_dht_and_the_host_is_paid(
        network, p2p_on, monkeypatch):
    args = ["--p2p-bootstrap", p2p_on.addrs[0]]
    (host,) = network.start_hosts({"host-1": 10**9}, {"host-1": args})

    async def refuse(self, model):
        raise AssertionError("the registry's list call was used")

    monkeypatch.setattr(Chain, "active_nodes", refuse)
    chain = await platform_chain()
    for _ in range(50):  # the host announces itself once it serves
        if await discovery.candidates(MODEL, chain=chain, fresh=True):
            break
        await asyncio.sleep(0.2)
    assert p2p.status()["mode"] == "dht"
    before = await chain.withdrawable(host.address)
    outcome = await run_job(JobSpec(model=MODEL, prompt="Give one tip for writing clearly.",
                                    max_tokens=16, temperature=0.0))
    assert outcome.host == host.address
    job = await Job.objects.aget(pk=outcome.job_id)
    assert job.state == JobState.COMPLETED
    assert await chain.withdrawable(host.address) > before
