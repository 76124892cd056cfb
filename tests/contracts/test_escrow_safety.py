"""No wei is created or lost, and a withdrawal cannot be re-entered."""

from collections import Counter

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from marketplace.chain import artifacts
from marketplace.chain.contracts import JobStatus
from marketplace.chain.errors import ChainError
from tests.contracts.conftest import ARBITRATION_WINDOW_S, MODEL, PRICE


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


CONTRACT_ERRORS = {name for name, _ in artifacts.error_selectors().values()}
OPEN = {JobStatus.POSTED, JobStatus.CLAIMED, JobStatus.SUBMITTED, JobStatus.DISPUTED}

OPS = st.lists(
    st.tuples(
        # Weighted towards the steps that move a job on, so most runs settle some jobs.
        st.sampled_from(["post"] * 3 + ["claim", "submit", "withdraw"] * 2 + [
            "accept", "dispute", "host disputes", "resolve", "expire", "expire dispute",
            "finalize", "cancel", "wait", "arbitration passes"]),
        st.integers(min_value=0, max_value=7),   # which job, who
        st.integers(min_value=0, max_value=60),  # tokens, share, seconds
    ),
    min_size=10, max_size=40,
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
async def test_random_operations_never_create_or_lose_wei(registered, ops):
    """After every operation, allowed or refused: the escrow holds exactly what open jobs
    escrow plus what is owed, what is owed is what the accounts are credited, every wei
    that left a wallet is in a contract or was paid as gas, and each host's count of open
    disputes (which holds its stake) is the number of its jobs in dispute."""
    net = registered
    tester = net.w3.provider.ethereum_tester
    snapshot = tester.take_snapshot()  # each example starts from the same chain
    people, hosts = ["alice", "bob"], ["host1", "host2"]
    everyone = people + hosts
    reader = net.chain("alice")
    gas_paid = 0

    async def audit(record):
        nonlocal gas_paid
        if record.status in ("mined", "reverted"):
            receipt = await net.w3.eth.get_transaction_receipt(record.tx_hash)
            gas_paid += receipt["gasUsed"] * receipt["effectiveGasPrice"]

    original = {name: net.chain(name).sender.audit for name in everyone}
    for name in everyone:
        net.chain(name).sender.audit = audit
    contracts = [net.deployment.escrow, net.deployment.registry, net.deployment.marketplace]
    wallets = [net.chain(n).address for n in everyone] + [net.treasury]

    async def total_wei() -> int:
        return sum([await net.w3.eth.get_balance(a) for a in wallets + contracts])

    start_total = await total_wei()
    jobs: list[int] = []
    try:
        for op, pick, amount in ops:
            try:
                await _apply(net, jobs, op, pick, amount, people, hosts)
                event(f"{op} done")
            except ChainError as exc:
                # A refused operation is the contract's own revert, never a fault on the way.
                assert exc.code in CONTRACT_ERRORS, exc
            balance, escrowed, owed = await reader.escrow_totals()
            assert balance == escrowed + owed
            open_escrow = 0
            in_dispute: Counter[str] = Counter()
            for job_id in jobs:
                job = await reader.get_job(job_id)
                if job.status in OPEN:
                    open_escrow += job.escrow_wei
                if job.status == JobStatus.DISPUTED:
                    in_dispute[job.host] += 1
            assert escrowed == open_escrow
            for host in hosts:
                address = net.chain(host).address
                assert (await reader.get_node(address)).open_disputes == in_dispute[address]
            credited = sum([await reader.withdrawable(a) for a in wallets])
            assert credited == owed
            assert await total_wei() + gas_paid == start_total
    finally:
        for name in everyone:
            net.chain(name).sender.audit = original[name]
        tester.revert_to_snapshot(snapshot)


async def _apply(net, jobs, op, pick, amount, people, hosts):
    if op == "post":
        posted = await net.chain(people[pick % 2]).post_job(
            model=MODEL, prompt_hash=b"\x00" * 32, max_tokens=50,
            max_price_per_token_wei=2 * PRICE, deadline=await net.now() + 60 + amount * 5)
        jobs.append(posted.job_id)
    elif op == "withdraw":
        await net.chain((people + hosts)[pick % 4]).withdraw()
    elif op == "wait":
        await net.time_travel(amount * 12)
    elif op == "arbitration passes":
        await net.time_travel(ARBITRATION_WINDOW_S + 1)
    elif jobs:
        job_id = jobs[pick % len(jobs)]
        job = await net.chain("alice").get_job(job_id)
        client = next(p for p in people if net.chain(p).address == job.client)
        host = next((h for h in hosts if net.chain(h).address == job.host), hosts[pick % 2])
        if op == "claim":
            await net.chain(hosts[pick % 2]).claim_job(job_id, MODEL)
        elif op == "submit":
            await net.chain(host).submit_result(job_id, result_hash=b"\x01" * 32, cid="c",
                                                tokens_used=amount)
        elif op == "accept":
            await net.chain(client).accept_result(job_id)
        elif op == "dispute":
            await net.chain(client).dispute(job_id, "why not")
        elif op == "host disputes":
            await net.chain(host).dispute(job_id, "a verdict, please")
        elif op == "resolve":
            # Sometimes with a slash: the stake moves to the registry's slashed balance.
            await net.chain("arbitrator").resolve_dispute(
                job_id, amount * 200, slash_wei=(pick % 2) * amount * 10**15)
        elif op == "expire dispute":
            await net.chain("bob").expire_dispute(job_id)
        elif op == "expire":
            await net.chain("bob").refund_expired(job_id)
        elif op == "finalize":
            await net.chain("bob").finalize(job_id)
        elif op == "cancel":
            await net.chain(client if pick % 3 else "bob").cancel_job(job_id)
