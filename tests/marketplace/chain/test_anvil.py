import asyncio
import sys
import textwrap
from pathlib import Path

import pytest
from eth_account import Account

from marketplace.chain.contracts import Chain, JobStatus
from marketplace.chain.devnet import anvil_args, dev_keys, ready_chain, wait_for_rpc
from marketplace.chain.errors import ChainError
from marketplace.chain.tx import Sender, TxRecord
from tests.conftest import free_port
from tests.marketplace.chain.races import claim_in_one_block

ROOT = Path(__file__).resolve().parents[3]
MODEL = "smollm2-135m-instruct"
PRICE = 10**9


async def test_a_full_job_lifecycle_through_the_client(on_anvil):
    platform = on_anvil.chain("platform")
    host = on_anvil.chain("host-1")
    await host.register(api_url="http://127.0.0.1:9", metadata={"region": "local"},
                        prices={MODEL: PRICE}, stake=10**17)
    (node,) = await platform.active_nodes(MODEL)
    assert node.address == host.address
    posted = await platform.post_job(model=MODEL, prompt_hash=b"\x07" * 32, max_tokens=64,
                                     max_price_per_token_wei=2 * PRICE,
                                     deadline=await platform.block_time() + 300,
                                     host=host.address)
    event = await platform.job_posted_event(posted.job_id)
    assert event["promptHash"] == b"\x07" * 32
    await host.claim_job(posted.job_id, MODEL)
    await host.submit_result(posted.job_id, result_hash=b"\x08" * 32, cid="bafkreitest",
                             tokens_used=20)
    result = await platform.submitted_result(posted.job_id)
    assert (result.cid, result.result_hash, result.tokens_used) == (
        "bafkreitest", "0x" + "08" * 32, 20)
    settled = await platform.accept_result(posted.job_id)
    assert settled.paid_wei == 20 * PRICE
    assert settled.refund == 64 * 2 * PRICE - 20 * PRICE
    job = await platform.get_job(posted.job_id)
    assert job.status == JobStatus.COMPLETED
    owed = await host.withdrawable(host.address)
    assert owed == settled.host_amount
    await host.withdraw()
    assert await host.withdrawable(host.address) == 0


async def test_concurrent_sends_from_one_account_never_clash_on_a_nonce(on_anvil, tmp_path):
    """30 coroutines here and 10 sends from a second process, all from one account."""
    records: list[TxRecord] = []

    async def audit(record: TxRecord) -> None:
        if record.status == "mined":
            records.append(record)

    sender = on_anvil.sender("host-2", audit=audit)
    escrow = on_anvil.chain("platform").escrow
    key = on_anvil.keys["host-2"]
    other = await asyncio.create_subprocess_exec(sys.executable, "-c", textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from web3 import AsyncHTTPProvider, AsyncWeb3
        from marketplace.chain.keystore import load_account
        from marketplace.chain.tx import Sender
        async def main():
            w3 = AsyncWeb3(AsyncHTTPProvider({on_anvil.url!r}))
            s = Sender(w3, load_account({str(key.keystore)!r}, {str(key.passphrase_file)!r}),
                       lock_dir=Path({str(on_anvil.lock_dir)!r}))
            for _ in range(10):
                await s.transact("ETH", lambda: _Transfer(w3))
        class _Transfer:
            fn_name = "transfer"
            def __init__(self, w3):
                self.w3 = w3
            async def estimate_gas(self, tx):
                return 21000
            async def build_transaction(self, tx):
                return {{**tx, "to": "0x000000000000000000000000000000000000dEaD"}}
        asyncio.run(main())
    """), cwd=ROOT)
    fn = escrow.functions.totalEscrowed

    class Touch:
        """A zero-value call to the escrow's getter, sent as a transaction."""

        fn_name = "touch"

        def __init__(self):
            self.call = fn()

        async def estimate_gas(self, tx):
            return await self.call.estimate_gas(tx)

        async def build_transaction(self, tx):
            return await self.call.build_transaction(tx)

    start_nonce = await sender.w3.eth.get_transaction_count(sender.address)
    receipts = await asyncio.gather(*(sender.transact("PaymentEscrow", Touch)
                                      for _ in range(30)))
    assert await asyncio.wait_for(other.wait(), 120) == 0
    assert all(r["status"] == 1 for r in receipts)
    assert len({r["transactionHash"] for r in receipts}) == 30
    nonces = sorted(r.nonce for r in records)
    assert len(set(nonces)) == 30
    end_nonce = await sender.w3.eth.get_transaction_count(sender.address)
    assert end_nonce - start_nonce == 40  # 30 here + 10 from the other process, none lost


async def test_the_event_reader_catches_up_then_follows_new_blocks(on_anvil):
    from marketplace.chain.events import follow

    platform = on_anvil.chain("platform")
    host = on_anvil.chain("host-3")
    await host.register(api_url="http://127.0.0.1:9", metadata={}, prices={MODEL: PRICE},
                        stake=10**17)
    start = await platform.w3.eth.block_number
    deadline = await platform.block_time() + 300
    first = await platform.post_job(model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=4,
                                    max_price_per_token_wei=PRICE, deadline=deadline)
    cursor: list[int] = []

    async def save(block: int) -> None:
        cursor.append(block)

    stop = asyncio.Event()
    seen = []

    async def read():
        async for event in follow(platform.market, ["JobPosted", "JobClaimed"],
                                  from_block=start, save_cursor=save, poll_s=0.05, stop=stop):
            seen.append((event.name, event.args["jobId"]))
            if len(seen) == 3:
                stop.set()

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.2)  # caught up with the past; now new blocks arrive
    second = await platform.post_job(model=MODEL, prompt_hash=b"\x02" * 32, max_tokens=4,
                                     max_price_per_token_wei=PRICE, deadline=deadline)
    await host.claim_job(second.job_id, MODEL)
    await asyncio.wait_for(reader, 10)
    assert seen == [("JobPosted", first.job_id), ("JobPosted", second.job_id),
                    ("JobClaimed", second.job_id)]
    assert cursor == sorted(cursor)
    assert cursor[-1] >= await platform.w3.eth.block_number - 1


async def test_a_recorded_deployment_is_reused_only_if_it_is_the_current_code(on_anvil,
                                                                              tmp_path):
    from marketplace.chain.deploy import Terms, ensure_deployed

    sender = on_anvil.sender("platform")
    terms = Terms(treasury=on_anvil.keys["treasury"].address,
                  arbitrator=on_anvil.keys["arbitrator"].address)
    first = await ensure_deployed(sender.w3, sender, terms, tmp_path)
    again = await ensure_deployed(sender.w3, sender, terms, tmp_path)
    assert again == first
    path = tmp_path / "31337.json"
    path.write_text(path.read_text().replace(first.code_version, "0ld"))
    replaced = await ensure_deployed(sender.w3, sender, terms, tmp_path)
    assert replaced.marketplace != first.marketplace
    assert replaced.code_version == first.code_version


async def test_a_revert_comes_back_as_the_contracts_error_over_json_rpc(on_anvil):
    platform = on_anvil.chain("platform")
    with pytest.raises(ChainError) as info:
        await platform.accept_result(12345)
    assert (info.value.code, info.value.permanent) == ("WrongState", True)
    with pytest.raises(ChainError) as info:
        await platform.finalize(12345)
    assert info.value.code == "WrongState"


async def test_an_account_without_ether_is_told_so_and_not_to_retry(on_anvil):
    penniless = Chain(on_anvil.w3(), on_anvil.deployment,
                      Sender(on_anvil.w3(), Account.create(), lock_dir=on_anvil.lock_dir))
    with pytest.raises(ChainError) as info:
        await penniless.post_job(model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=10,
                                 max_price_per_token_wei=PRICE,
                                 deadline=await penniless.block_time() + 300)
    assert (info.value.code, info.value.permanent) == ("INSUFFICIENT_FUNDS", True)


async def test_the_loser_of_a_claim_race_in_one_block_learns_why(on_anvil):
    """Both claims pass gas estimation; both are mined in one block; the second reverts on
    chain, and its error is named by replaying it on the state the block left."""
    platform = on_anvil.chain("platform")
    first, second = on_anvil.chain("host-1"), on_anvil.chain("host-2")
    for host in (first, second):
        if not (await host.get_node(host.address)).active:
            await host.register(api_url="http://127.0.0.1:9", metadata={},
                                prices={MODEL: PRICE}, stake=10**17)
    posted = await platform.post_job(model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=8,
                                     max_price_per_token_wei=PRICE,
                                     deadline=await platform.block_time() + 300)
    results = await claim_in_one_block(platform, [first, second], posted.job_id, MODEL)
    errors = [r for r in results if isinstance(r, ChainError)]
    assert len(errors) == 1, results
    assert (errors[0].code, errors[0].permanent) == ("WrongState", True)
    assert errors[0].tx_hash is not None
    job = await platform.get_job(posted.job_id)
    assert job.status == JobStatus.CLAIMED


async def test_the_devnet_keeps_its_contracts_across_a_restart(tmp_path):
    """anvil's state is saved under var/ on exit and loaded on start: the recorded
    deployment is reused, not deployed again."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = tmp_path / "devnet" / "chain-state.json"
    handles = []
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            *anvil_args(port, state), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        try:
            await asyncio.to_thread(wait_for_rpc, url)
            chain = await ready_chain("host-4", rpc_url=url, var_dir=tmp_path)
            handles.append((chain.deployment, await chain.w3.eth.block_number))
            await chain.close()
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
    (first, first_block), (second, second_block) = handles
    assert second == first
    assert second_block == first_block  # nothing was sent the second time
    assert (tmp_path / "deployments" / "31337.json").exists()


async def test_the_devnet_arbitrator_is_an_account_of_its_own_and_the_model_is_pinned(
        anvil, tmp_path):
    """The devnet grants ARBITRATOR_ROLE to its arbitrator account, never to the platform
    wallet that pays for jobs, and approves the bundled model with its file's sha256."""
    from marketplace.weights import SMOLLM2_ID, bundled_model_path, file_sha256

    platform = await ready_chain("platform", rpc_url=anvil, var_dir=tmp_path)
    try:
        keys = dev_keys(tmp_path / "devnet" / "keys")
        arbitrator = keys["arbitrator"].address
        assert arbitrator not in (keys["platform"].address, keys["treasury"].address)
        for contract in ("registry", "market"):
            assert await platform.has_role(contract, "ARBITRATOR_ROLE", arbitrator)
            assert not await platform.has_role(contract, "ARBITRATOR_ROLE", platform.address)
        assert await platform.model_hash(SMOLLM2_ID) == file_sha256(bundled_model_path())
        assert await platform.arbitration_window() == 3600
    finally:
        await platform.close()
