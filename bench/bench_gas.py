"""Gas of each contract operation and of one full job, on py-evm in process.

The baseline, measured in the same run, is a plain ether transfer (21,000 gas); the full
job is also printed as a multiple of it and of the target: a full job (post, claim,
submit, accept) in at most 300,000 gas. "Full job" is the steady state, accounts that
have been paid before; the first job of new accounts pays once to create their balances.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from eth_account import Account
from web3 import AsyncWeb3
from web3.providers.eth_tester import AsyncEthereumTesterProvider

from bench.common import report
from marketplace.chain.contracts import Chain
from marketplace.chain.deploy import Terms, deploy
from marketplace.chain.tx import Sender

MODEL = "smollm2-135m-instruct"
PRICE = 10**9
TARGET = 300_000


async def main() -> None:
    w3 = AsyncWeb3(AsyncEthereumTesterProvider())
    lock_dir = Path(tempfile.mkdtemp())
    funder = (await w3.eth.accounts)[0]
    chains: dict[str, Chain] = {}
    gas: dict[str, int] = {}

    async def used(tx_hash: str) -> int:
        return int((await w3.eth.get_transaction_receipt(tx_hash))["gasUsed"])

    async def account(name):
        acct = Account.create()
        tx = await w3.eth.send_transaction({"from": funder, "to": acct.address,
                                            "value": 10**21})
        gas.setdefault("ether transfer (baseline)", await used(tx.to_0x_hex()))
        return Sender(w3, acct, lock_dir=lock_dir)

    owner = await account("owner")
    arbitrator = await account("arbitrator")
    # Gas does not depend on the file: any non-zero sha256 approves the model.
    deployment = await deploy(w3, owner, Terms(treasury=Account.create().address,
                                               arbitrator=arbitrator.address,
                                               models={MODEL: b"\x5e" * 32}))
    for name in ("client", "host"):
        chains[name] = Chain(w3, deployment, await account(name))
    client, host = chains["client"], chains["host"]

    gas["register"] = await used(await host.register(
        api_url="http://127.0.0.1:9101",
        metadata={"region": "local", "publicKey": "0x" + "ab" * 33},
        prices={MODEL: PRICE}, stake=10**17))

    async def job(deadline_s=600):
        return await client.post_job(model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=256,
                                     max_price_per_token_wei=2 * PRICE,
                                     deadline=await client.block_time() + deadline_s,
                                     host=host.address)

    posted = await job()
    gas["postJob"] = await used(posted.tx_hash)
    gas["claimJob"] = await used(await host.claim_job(posted.job_id, MODEL))
    gas["submitResult"] = await used(await host.submit_result(
        posted.job_id, result_hash=b"\x02" * 32,
        cid="bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", tokens_used=180))
    gas["acceptResult"] = await used((await client.accept_result(posted.job_id)).tx_hash)
    first = sum(gas[k] for k in ("postJob", "claimJob", "submitResult", "acceptResult"))

    # The same accounts' next job: the steady state, where the balances to be credited
    # already exist (the first job pays to create those storage slots).
    steady = await job()
    parts = {"postJob": await used(steady.tx_hash)}
    parts["claimJob"] = await used(await host.claim_job(steady.job_id, MODEL))
    parts["submitResult"] = await used(await host.submit_result(
        steady.job_id, result_hash=b"\x03" * 32,
        cid="bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", tokens_used=180))
    parts["acceptResult"] = await used((await client.accept_result(steady.job_id)).tx_hash)
    full = sum(parts.values())
    for name, value in parts.items():
        gas[f"{name} (steady)"] = value

    # An open job, for any host: posting creates two slots and the claim the third.
    open_job = await client.post_job(model=MODEL, prompt_hash=b"\x04" * 32, max_tokens=256,
                                     max_price_per_token_wei=2 * PRICE,
                                     deadline=await client.block_time() + 600)
    open_parts = [await used(open_job.tx_hash),
                  await used(await host.claim_job(open_job.job_id, MODEL))]
    open_parts.append(await used(await host.submit_result(
        open_job.job_id, result_hash=b"\x05" * 32,
        cid="bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", tokens_used=180)))
    open_parts.append(await used((await client.accept_result(open_job.job_id)).tx_hash))
    gas["postJob (open)"], gas["claimJob (open)"] = open_parts[:2]

    tester = w3.provider.ethereum_tester
    later = await job()
    await host.claim_job(later.job_id, MODEL)
    await host.submit_result(later.job_id, result_hash=b"\x02" * 32, cid="c", tokens_used=9)
    tester.time_travel(await client.block_time() + 601)
    gas["finalize"] = await used((await client.finalize(later.job_id)).tx_hash)

    disputed = await job()
    await host.claim_job(disputed.job_id, MODEL)
    await host.submit_result(disputed.job_id, result_hash=b"\x02" * 32, cid="c", tokens_used=9)
    gas["disputeJob"] = await used(await client.dispute(disputed.job_id, "junk"))
    arbitrator_chain = Chain(w3, deployment, arbitrator)
    gas["resolveDispute"] = await used((await arbitrator_chain.resolve_dispute(
        disputed.job_id, 5000)).tx_hash)
    slashed = await job()
    await host.claim_job(slashed.job_id, MODEL)
    await host.submit_result(slashed.job_id, result_hash=b"\x02" * 32, cid="c", tokens_used=9)
    await client.dispute(slashed.job_id, "junk")
    gas["resolveDispute (with a slash)"] = await used((await arbitrator_chain.resolve_dispute(
        slashed.job_id, 0, slash_wei=10**15)).tx_hash)
    expiring = await job(deadline_s=100_000)
    await host.claim_job(expiring.job_id, MODEL)
    await host.submit_result(expiring.job_id, result_hash=b"\x02" * 32, cid="c", tokens_used=9)
    gas["disputeJob (by the host)"] = await used(await host.dispute(expiring.job_id, "verdict"))
    tester.time_travel(await client.block_time() + 86_401)
    gas["expireDispute"] = await used((await client.expire_dispute(expiring.job_id)).tx_hash)

    expired = await job(deadline_s=30)
    await host.claim_job(expired.job_id, MODEL)
    unclaimed = await job(deadline_s=30)
    tester.time_travel(await client.block_time() + 31)
    gas["refundExpired (host failed)"] = await used(await client.refund_expired(expired.job_id))
    gas["refundExpired (unclaimed)"] = await used(await client.refund_expired(
        unclaimed.job_id))
    gas["cancelJob"] = await used(await client.cancel_job((await job()).job_id))
    gas["withdraw"] = await used(await host.withdraw())
    gas["withdraw (client)"] = await used(await client.withdraw())

    gas["update"] = await used(await host.update_node(
        api_url="http://127.0.0.1:9102", metadata={"region": "local"},
        prices={MODEL: PRICE}))
    gas["requestUnregister"] = await used(await host.request_unregister())
    tester.time_travel(await client.block_time() + 3601)
    gas["withdrawStake"] = await used(await host.withdraw_stake())

    baseline = gas["ether transfer (baseline)"]
    for name, value in gas.items():
        report(f"gas {name}", value, "gas")
    report("first job gas (new accounts)", first, "gas")
    report("full job gas", full, "gas")
    report("full job gas (open job, any host)", sum(open_parts), "gas")
    report("full job gas ratio vs ether transfer", full / baseline)
    report("full job gas ratio vs 300k target", full / TARGET)


if __name__ == "__main__":
    asyncio.run(main())
