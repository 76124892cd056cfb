"""The two attacks on reputation, made for real on the devnet (anvil, our contracts, real
host processes on the bundled model) with the tools anyone can run
(marketplace.reputation_attacks, `manage.py reputation_attack`): each moves the chain's
counters as the attacker wants, and neither moves our ranking."""

from __future__ import annotations

import asyncio
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from eth_account import Account

from marketplace.chain.contracts import Chain, JobStatus
from marketplace.chain.devnet import dev_private_key
from marketplace.chain.tx import Sender
from marketplace.client import discovery
from marketplace.client.ranking import rank
from marketplace.reputation_attacks import defame, refund_expired, self_deal
from marketplace.services import JobSpec, run_job
from marketplace.wallet import platform_chain
from tests.conftest import MODEL

pytestmark = pytest.mark.django_db(transaction=True)

PRICE = 10**9
# anvil funds the first ten accounts of its mnemonic; 5 to 7 have no role in the devnet.
SPARE_ACCOUNTS = (5, 6, 7)


def spare(on_anvil, index: int, tmp_path) -> Chain:
    """A funded address nobody else uses: an attacker's second wallet."""
    sender = Sender(on_anvil.w3(), Account.from_key(dev_private_key(index)),
                    lock_dir=tmp_path / "attacker-locks")
    return Chain(sender.w3, on_anvil.deployment, sender)


async def serve_jobs(count: int) -> list[str]:
    """Real jobs of our own, run to the end; the hosts that served them."""
    hosts = []
    for number in range(count):
        outcome = await run_job(JobSpec(model=MODEL, prompt=f"Count to {number + 3}.",
                                        max_tokens=8, temperature=0.0))
        hosts.append(outcome.host)
    return hosts


async def standing(chain: Chain) -> dict[str, object]:
    found = await discovery.candidates(MODEL, chain=chain, fresh=True)
    return {c.address: c for c in found}


async def test_a_host_paying_itself_from_other_addresses_does_not_rise_above_an_honest_host(
        network, tmp_path):
    chain = await platform_chain()
    (honest,) = network.start_hosts({"host-1": PRICE})
    assert await serve_jobs(3) == [honest.address] * 3  # a real record, earned with us
    (dealer,) = network.start_hosts({"host-2": PRICE})
    payers = [spare(network.anvil, index, tmp_path) for index in SPARE_ACCOUNTS[:3]]

    await self_deal(payers, host=dealer.address, host_url=dealer.url, model=MODEL, jobs=12)

    # The attack did what it buys on chain: the dealer has four times the honest host's
    # completed jobs, the count the client used to trust.
    assert (await chain.get_node(dealer.address)).completed == 12
    assert (await chain.get_node(honest.address)).completed == 3
    found = await standing(chain)
    assert found[dealer.address].reputation == 0.5  # as unknown as before: 1-token jobs
    assert found[honest.address].reputation > found[dealer.address].reputation
    assert rank(list(found.values()), model=MODEL)[0].address == honest.address
    assert await serve_jobs(1) == [honest.address]


async def test_jobs_left_to_expire_on_a_host_do_not_push_it_down(network, tmp_path):
    chain = await platform_chain()
    (victim,) = network.start_hosts({"host-1": PRICE})
    assert await serve_jobs(1) == [victim.address]
    (peer,) = network.start_hosts({"host-2": PRICE})
    before = (await standing(chain))[victim.address].reputation
    attacker = spare(network.anvil, SPARE_ACCOUNTS[0], tmp_path)

    posted = await defame(attacker, victim=victim.address, model=MODEL, jobs=5, deadline_s=6)
    # The victim's host claims jobs assigned to it as they are posted; the attacker never
    # connects, and takes its money back once the deadline has passed.
    for _ in range(100):
        jobs = [await attacker.get_job(job_id) for job_id in posted]
        if all(job.status == JobStatus.CLAIMED for job in jobs):
            break
        await asyncio.sleep(0.2)
    refunded = 0
    for _ in range(200):  # until the chain's clock passes the deadlines
        # anvil mines only on demand, and a live chain makes a block every few seconds:
        # an empty block moves the clock the contract reads.
        await attacker.w3.provider.make_request("evm_mine", [])
        refunded += await refund_expired(attacker, posted)
        if refunded == len(posted):
            break
        await asyncio.sleep(0.2)
    assert refunded == 5

    assert (await chain.get_node(victim.address)).failed == 5  # the chain counted it
    found = await standing(chain)
    assert found[victim.address].reputation == before
    assert found[victim.address].reputation > found[peer.address].reputation
    assert rank(list(found.values()), model=MODEL)[0].address == victim.address


async def test_anyone_can_run_the_attacks_from_the_command_line(network):
    (host,) = network.start_hosts({"host-1": PRICE})
    said = StringIO()

    await sync_to_async(call_command)("reputation_attack", "self-dealing", "--host",
                                      host.address, "--jobs", "2", "--accounts", "5", "6",
                                      stdout=said)

    assert said.getvalue().strip() == (f"2 jobs paid to {host.address} by 2 addresses; the "
                                       "registry now counts 2 completed")
