"""A host operator's money on anvil, with real host processes and real jobs: the earnings
page and `manage.py host earnings` against what the chain really moved, and
`manage.py host withdraw | unregister` taking earnings and stake out."""

import asyncio
import os
import re
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async
from eth_utils import to_checksum_address

from accounts.services import user_create
from marketplace.earnings import host_earnings
from marketplace.models import Job
from marketplace.services import JobSpec, run_job
from marketplace.wallet import platform_chain
from tests.conftest import MODEL, ROOT

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = 10**9
FEE_BPS = 250
STAKE = 10**17  # runhost's default


def host_command(network, role: str, *args: str) -> subprocess.CompletedProcess:
    key = network.anvil.keys[role]
    return subprocess.run(
        [sys.executable, "manage.py", "host", *args, "--keystore", str(key.keystore),
         "--passphrase-file", str(key.passphrase_file), "--rpc-url", network.anvil.url,
         "--deployment", str(network.deployment_file), "--results-dir",
         str(network.tmp / role)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"})


async def gas_paid_by(w3, address: str, start: int) -> int:
    """What `address` paid for gas from block `start` on, read block by block: the
    reference the event-based figure is held to."""
    total = 0
    for number in range(start, await w3.eth.block_number + 1):
        block = await w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if to_checksum_address(tx["from"]) == address:
                receipt = await w3.eth.get_transaction_receipt(tx["hash"])
                total += int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
    return total


async def assert_paid_out(network, w3, address: str, action: str, amount: int) -> None:
    """`manage.py host ACTION` sends `amount` to the host: its balance grows by exactly that,
    less the gas of the transaction the command says it sent."""
    before = await w3.eth.get_balance(address)
    done = await asyncio.to_thread(host_command, network, "host-1", action)
    assert done.returncode == 0, done.stderr
    assert f"({amount} wei)" in done.stdout
    tx = re.search(r"in (0x[0-9a-f]{64})", done.stdout).group(1)
    receipt = await w3.eth.get_transaction_receipt(tx)
    gas = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await w3.eth.get_balance(address) - before == amount - gas


async def two_jobs(network):
    (host,) = network.start_hosts({"host-1": PRICE})
    outcomes = [await run_job(JobSpec(model=MODEL, prompt=prompt, max_tokens=16,
                                      temperature=0.0))
                for prompt in ("Name a colour.", "Name a fruit.")]
    tokens = 0
    for outcome in outcomes:
        job = await Job.objects.aget(pk=outcome.job_id)
        attempt = await job.attempts.aget()
        tokens += attempt.tokens_billed
    payment = tokens * PRICE
    return host, tokens, payment


async def test_the_earnings_add_up_to_what_the_chain_moved(network, async_client):
    chain = await platform_chain()
    start = network.anvil.deployment.block
    host, tokens, payment = await two_jobs(network)
    # Each job's fee is rounded down on its own: sum them per job.
    fees = 0
    async for job in Job.objects.all():
        attempt = await job.attempts.aget()
        fees += attempt.tokens_billed * PRICE * FEE_BPS // 10000
    network.stop()  # its withdrawal loop must not move money while we count

    earnings = await host_earnings(chain, host.address)
    assert (earnings.total.jobs, earnings.claimed, earnings.refunded) == (2, 2, 0)
    assert earnings.total.tokens == tokens
    assert earnings.total.earned_wei == payment - fees
    assert earnings.total.fees_wei == fees
    gas = await gas_paid_by(chain.w3, host.address, start)
    assert gas > 0 and earnings.total.gas_wei == gas
    assert earnings.total.net_wei == payment - fees - gas
    assert sum(d.earned_wei for d in earnings.days) == earnings.total.earned_wei
    assert earnings.stake_wei == STAKE and earnings.active
    # Every wei the host's account lost or gained since the deployment is accounted for.
    moved = await chain.w3.eth.get_balance(host.address) - await chain.w3.eth.get_balance(
        host.address, block_identifier=start)
    assert moved == earnings.withdrawn_wei - STAKE - gas
    assert earnings.withdrawable_wei + earnings.withdrawn_wei == earnings.total.earned_wei

    user = await sync_to_async(user_create)(username="operator", password="a-long-pw-12")
    await async_client.aforce_login(user)
    page = await async_client.get("/usage/host/", {"address": host.address.lower()})
    assert page.status_code == 200
    html = page.content.decode()
    assert re.search(r'id="host-jobs">2<', html)
    for figure, wei in (("host-earned", payment - fees), ("host-gas", gas),
                        ("host-net", payment - fees - gas), ("host-stake", STAKE)):
        assert re.search(rf'id="{figure}"><span class="money" title="{wei:,} wei">', html), \
            figure
    assert html.count("<tr><td>") == len(earnings.days)  # a row per day


async def test_the_earnings_page_refuses_what_is_not_an_address(async_client):
    user = await sync_to_async(user_create)(username="op2", password="a-long-pw-12")
    assert (await async_client.get("/usage/host/", {"address": "0x12"})).status_code == 302
    await async_client.aforce_login(user)
    checksummed = "0x52908400098527886E0F7030069857D2E4169EE7"  # EIP-55's own example
    for bad in ("0x12", "not an address", "0x" + "g" * 40, checksummed[2:],
                checksummed.replace("E", "e", 1), checksummed + "00"):
        page = await async_client.get("/usage/host/", {"address": bad})
        assert page.status_code == 400
        assert 'data-code="INVALID_ADDRESS"' in page.content.decode()


async def test_the_earnings_page_says_when_the_chain_is_away(async_client, settings,
                                                             unused_port, tmp_path):
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}/key-SECRET"
    user = await sync_to_async(user_create)(username="op3", password="a-long-pw-12")
    await async_client.aforce_login(user)
    page = await async_client.get("/usage/host/",
                                  {"address": "0x" + "ab" * 20})
    assert page.status_code == 503
    html = page.content.decode()
    assert 'data-code="CHAIN_UNAVAILABLE"' in html and "SECRET" not in html


async def test_an_operator_withdraws_earnings_then_unregisters_and_takes_the_stake(network):
    chain = await platform_chain()
    w3 = chain.w3
    host, tokens, payment = await two_jobs(network)
    network.stop()
    owed = await chain.withdrawable(host.address)
    assert owed > 0

    report = await asyncio.to_thread(host_command, network, "host-1", "earnings")
    assert report.returncode == 0, report.stderr
    assert f"withdrawable {owed:,}" not in report.stdout  # amounts are shown in ETH...
    assert f"({owed} wei)" in report.stdout  # ... with the exact wei beside them
    assert re.search(rf"^total\s+2\s+{tokens}\s", report.stdout, re.M)

    await assert_paid_out(network, w3, host.address, "withdraw", owed)
    assert await chain.withdrawable(host.address) == 0
    again = await asyncio.to_thread(host_command, network, "host-1", "withdraw")
    assert again.returncode == 0 and "nothing to withdraw" in again.stdout

    leave = await asyncio.to_thread(host_command, network, "host-1", "unregister")
    assert leave.returncode == 0, leave.stderr
    assert "run `manage.py host unregister` again" in leave.stdout
    node = await chain.get_node(host.address)
    assert not node.active and node.stake == STAKE
    assert host.address not in {n.address for n in await chain.active_nodes(MODEL)}
    early = await asyncio.to_thread(host_command, network, "host-1", "unregister")
    assert early.returncode == 1 and "the stake is held until" in early.stderr
    assert "Traceback" not in early.stderr
    assert (await chain.get_node(host.address)).stake == STAKE

    cooldown = await chain.registry.functions.cooldown().call()
    await w3.provider.make_request("evm_increaseTime", [cooldown + 1])
    await w3.provider.make_request("evm_mine", [])
    await assert_paid_out(network, w3, host.address, "unregister", STAKE)
    assert (await chain.get_node(host.address)).stake == 0
    gone = await asyncio.to_thread(host_command, network, "host-1", "unregister")
    assert gone.returncode == 1 and "has no stake" in gone.stderr


async def test_a_wrong_passphrase_is_a_clear_error(network, tmp_path):
    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not the passphrase")
    key = network.anvil.keys["host-2"]
    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "manage.py", "host", "withdraw", "--keystore", str(key.keystore),
        "--passphrase-file", str(wrong), "--rpc-url", network.anvil.url, "--deployment",
        str(network.deployment_file)], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"})
    assert result.returncode == 1
    assert "cannot open the keystore" in result.stderr and "Traceback" not in result.stderr
