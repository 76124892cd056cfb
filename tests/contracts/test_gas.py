"""The gas budget of one job (bench/bench_gas.py measures every operation)."""

from tests.contracts.conftest import MODEL, PRICE

FULL_JOB_GAS_LIMIT = 300_000


async def test_a_full_job_costs_at_most_300k_gas_between_accounts_paid_before(registered):
    """Post (host assigned), claim, submit, accept: the second job of the same accounts,
    whose balances exist already (the first pays once to create them)."""
    net = registered
    alice, host = net.chain("alice"), net.chain("host1")

    async def used(tx_hash: str) -> int:
        return int((await net.w3.eth.get_transaction_receipt(tx_hash))["gasUsed"])

    async def one_job() -> int:
        posted = await alice.post_job(model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=256,
                                      max_price_per_token_wei=2 * PRICE,
                                      deadline=await net.now() + 600, host=host.address)
        gas = await used(posted.tx_hash)
        gas += await used(await host.claim_job(posted.job_id, MODEL))
        gas += await used(await host.submit_result(
            posted.job_id, result_hash=b"\x02" * 32,
            cid="bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", tokens_used=180))
        gas += await used((await alice.accept_result(posted.job_id)).tx_hash)
        return gas

    await one_job()
    assert await one_job() <= FULL_JOB_GAS_LIMIT
