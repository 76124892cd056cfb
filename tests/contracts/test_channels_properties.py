"""Payment channels under random use, on anvil: opens, top-ups, vouchers, closes with the
latest, a stale, an inflated or a forged voucher, exits, withdrawals and time travel.
After every step, allowed or refused: no wei is created or lost, the contract holds what
open channels hold plus what is owed, a host never gets more than the payer signed, and
at the end every payer can still leave every channel it opened."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from marketplace.chain import artifacts
from marketplace.chain.channels import Channels, ChannelState, Voucher
from marketplace.chain.errors import ChainError
from tests.conftest import MODEL

PAYERS = ["platform", "host-4"]
HOSTS = ["host-1", "host-2"]
PRICE = 10**9
CONTRACT_ERRORS = {name for name, _ in artifacts.error_selectors().values()}

OPS = st.lists(
    st.tuples(
        st.sampled_from(["open"] * 2 + ["voucher"] * 4 + [
            "top up", "close latest", "close stale", "close inflated", "close forged",
            "start exit", "finish exit", "withdraw", "wait", "challenge passes"]),
        st.integers(min_value=0, max_value=7),  # which channel, who
        st.integers(min_value=1, max_value=100),  # how much, how long
    ),
    min_size=8, max_size=30,
)


@dataclass
class Tracked:
    channel_id: int
    payer: str
    host: str
    signed: list[int] = field(default_factory=list)  # cumulative amounts, in order


async def rpc(w3, method: str, params: list):
    response = await w3.provider.make_request(method, params)
    return response["result"]


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
async def test_random_channel_use_never_creates_or_loses_wei(on_anvil, ops):
    net = on_anvil
    chains = {name: net.chain(name) for name in PAYERS + HOSTS}
    w3 = chains["platform"].w3
    snapshot = await rpc(w3, "evm_snapshot", [])
    gas_paid = 0

    async def audit(record):
        nonlocal gas_paid
        if record.status in ("mined", "reverted"):
            receipt = await w3.eth.get_transaction_receipt(record.tx_hash)
            gas_paid += receipt["gasUsed"] * receipt["effectiveGasPrice"]

    try:
        for host in HOSTS:
            await chains[host].register(api_url=f"http://{host}.example", metadata={},
                                        prices={MODEL: PRICE}, stake=10**17)
        for chain in chains.values():
            chain.sender.audit = audit
        channels = {name: Channels(chain) for name, chain in chains.items()}
        reader = channels["platform"]
        treasury = net.keys["treasury"].address
        wallets = [c.address for c in chains.values()] + [treasury]
        unit = 10**15

        async def total_wei() -> int:
            return sum([await w3.eth.get_balance(a) for a in [*wallets,
                                                               reader.contract.address]])

        start = await total_wei()
        tracked: list[Tracked] = []
        paid_to_host: dict[int, int] = {}
        for op, pick, amount in ops:
            try:
                done = await _apply(net, channels, tracked, paid_to_host, op, pick, amount,
                                    unit)
                event(f"{op}: {done}")
            except ChainError as exc:
                assert exc.code in CONTRACT_ERRORS, exc
                event(f"{op}: refused {exc.code}")
            await _invariants(channels, reader, tracked, paid_to_host, wallets)
            assert await total_wei() + gas_paid == start
        # Whatever happened, every payer can leave every channel still open.
        challenge = await reader.challenge_period()
        for t in tracked:
            info = await reader.get(t.channel_id)
            if info.state == ChannelState.OPEN:
                await channels[t.payer].start_exit(t.channel_id)
        await rpc(w3, "evm_increaseTime", [challenge + 1])
        await rpc(w3, "evm_mine", [])
        for t in tracked:
            info = await reader.get(t.channel_id)
            if info.state != ChannelState.CLOSED:
                before = await reader.withdrawable(info.payer)
                settled = await channels["host-1"].finish_exit(t.channel_id)
                assert settled.refund == info.deposit
                assert await reader.withdrawable(info.payer) - before == info.deposit
        balance, deposits, owed = await reader.totals()
        assert deposits == 0 and balance == owed
        assert await total_wei() + gas_paid == start
    finally:
        await rpc(w3, "evm_revert", [snapshot])


async def _apply(net, channels, tracked, paid_to_host, op, pick, amount, unit):
    if op == "open":
        payer, host = PAYERS[pick % 2], HOSTS[(pick // 2) % 2]
        channel_id = await channels[payer].open(channels[host].chain.address, amount * unit)
        tracked.append(Tracked(channel_id, payer, host))
        return "done"
    if op == "withdraw":
        await channels[(PAYERS + HOSTS)[pick % 4]].withdraw()
        return "done"
    if op in ("wait", "challenge passes"):
        seconds = amount * 60 if op == "wait" else await channels["platform"].challenge_period()
        w3 = channels["platform"].chain.w3
        await rpc(w3, "evm_increaseTime", [seconds])
        await rpc(w3, "evm_mine", [])
        return "done"
    if not tracked:
        return "no channel yet"
    t = tracked[pick % len(tracked)]
    payer, host = channels[t.payer], channels[t.host]
    key = bytes(payer.chain.sender.account.key)
    latest = t.signed[-1] if t.signed else 0
    if op == "voucher":
        # Cumulative: each voucher is for more than the last, never over the deposit.
        deposit = (await payer.get(t.channel_id)).deposit
        t.signed.append(min(deposit, latest + amount * unit // 10))
    elif op == "top up":
        await payer.top_up(t.channel_id, amount * unit)
    elif op.startswith("close"):
        if op == "close latest":
            voucher = payer.vouchers.sign(key, t.channel_id, latest)
        elif op == "close stale":
            voucher = payer.vouchers.sign(key, t.channel_id, t.signed[0] if t.signed else 0)
        elif op == "close inflated":  # a signature for less, an amount of more
            signed = payer.vouchers.sign(key, t.channel_id, latest)
            voucher = Voucher(t.channel_id, latest + unit, signed.signature)
        else:  # signed by the host itself
            voucher = host.vouchers.sign(bytes(host.chain.sender.account.key), t.channel_id,
                                         latest + unit)
        settled = await host.close(voucher)
        paid_to_host[t.channel_id] = settled.host_amount + settled.fee
    elif op == "start exit":
        await payer.start_exit(t.channel_id)
    elif op == "finish exit":
        await payer.finish_exit(t.channel_id)
        paid_to_host[t.channel_id] = 0
    return "done"


async def _invariants(channels, reader, tracked, paid_to_host, wallets):
    balance, deposits, owed = await reader.totals()
    assert balance == deposits + owed
    open_deposits = 0
    for t in tracked:
        info = await reader.get(t.channel_id)
        if info.state != ChannelState.CLOSED:
            open_deposits += info.deposit
        # A host never takes more than the payer signed for this channel.
        assert paid_to_host.get(t.channel_id, 0) <= max(t.signed, default=0)
    assert deposits == open_deposits
    assert sum([await reader.withdrawable(a) for a in wallets]) == owed
