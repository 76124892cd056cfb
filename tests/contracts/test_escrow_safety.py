"""No wei is created or lost, and a withdrawal cannot be re-entered."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace.chain import artifacts
from marketplace.chain.errors import ChainError
from tests.contracts.conftest import MODEL, PRICE


async def test_a_contract_that_re_enters_withdraw_gets_its_refund_once(registered):
    net = registered
    owner = net.chain("owner")
    factory = net.w3.eth.contract(abi=artifacts.abi("ReentrantWithdrawer"),
                                  bytecode=artifacts.bytecode("ReentrantWithdrawer"))
    receipt = await owner.sender.transact("ReentrantWithdrawer", factory.constructor,
                                          net.deployment.escrow, net.deployment.marketplace)
    attacker = net.w3.eth.contract(address=receipt["contractAddress"],
                                   abi=artifacts.abi("ReentrantWithdrawer"))
    escrow_amount = 10 * PRICE
    deadline = await net.now() + 60
    await owner.sender.transact("ReentrantWithdrawer", attacker.functions.post, MODEL, 10,
                                PRICE, deadline, value=escrow_amount)
    await net.time_travel(61)
    await owner.sender.transact("ReentrantWithdrawer", attacker.functions.refund, 1)
    assert await owner.withdrawable(attacker.address) == escrow_amount
    await owner.sender.transact("ReentrantWithdrawer", attacker.functions.attack)
    assert await attacker.functions.reentryAttempts().call() == 1
    assert await attacker.functions.reentrySucceeded().call() is False
    assert await net.w3.eth.get_balance(attacker.address) == escrow_amount
    balance, escrowed, owed = await owner.escrow_totals()
    assert balance == escrowed + owed == 0


OPS = st.lists(
    st.tuples(
        st.sampled_from(["post", "claim", "submit", "accept", "dispute", "resolve", "expire",
                         "finalize", "withdraw"]),
        st.integers(min_value=0, max_value=7),   # which job / who
        st.integers(min_value=1, max_value=50),  # tokens / share
    ),
    min_size=5, max_size=30,
)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
async def test_random_operations_never_create_or_lose_wei(registered, ops):
    net = registered
    people = ["alice", "bob"]
    hosts = ["host1", "host2"]
    jobs: list[int] = []
    for op, pick, amount in ops:
        try:
            if op == "post":
                posted = await net.chain(people[pick % 2]).post_job(
                    model=MODEL, prompt_hash=b"\x00" * 32, max_tokens=50,
                    max_price_per_token_wei=2 * PRICE, deadline=await net.now() + 100)
                jobs.append(posted.job_id)
                continue
            if op == "withdraw":
                await net.chain((people + hosts)[pick % 4]).withdraw()
                continue
            if not jobs:
                continue
            job_id = jobs[pick % len(jobs)]
            job = await net.chain("alice").get_job(job_id)
            client = next(p for p in people if net.chain(p).address == job.client)
            if op == "claim":
                await net.chain(hosts[pick % 2]).claim_job(job_id, MODEL)
            elif op == "submit":
                host = next((h for h in hosts if net.chain(h).address == job.host), "host1")
                await net.chain(host).submit_result(job_id, result_hash=b"\x01" * 32, cid="c",
                                                    tokens_used=amount)
            elif op == "accept":
                await net.chain(client).accept_result(job_id)
            elif op == "dispute":
                await net.chain(client).dispute(job_id, "why not")
            elif op == "resolve":
                await net.chain("owner").resolve_dispute(job_id, amount * 200)
            elif op == "expire":
                await net.time_travel(101)
                await net.chain("bob").refund_expired(job_id)
            elif op == "finalize":
                await net.time_travel(601)
                await net.chain("bob").finalize(job_id)
        except ChainError as exc:
            assert exc.permanent  # a refused operation is a revert, never a lost transfer
        balance, escrowed, owed = await net.chain("alice").escrow_totals()
        assert balance == escrowed + owed
        credited = sum([await net.chain("alice").withdrawable(net.chain(n).address)
                        for n in people + hosts] + [await net.chain("alice").withdrawable(
                            net.treasury)])
        assert credited == owed
