"""Channel streams against a real host (the bundled model) on anvil: paid by vouchers as
tokens arrive, nothing on chain per job, the host's credit limit, and each voucher the host
refuses with its code."""

from __future__ import annotations

import secrets

import pytest

from marketplace.chain.channels import Channels, VoucherSigner
from marketplace.client.errors import ClientError
from marketplace.client.stream import Payment, stream_job
from marketplace.host.vouchers import Held
from tests.marketplace.host.conftest import PRICE, request_for, signer_for, start_host

DEPOSIT = 10**16
FEE_BPS = 250


class Payer:
    """The platform's side of one channel, kept in memory: the cumulative amount and each
    voucher made for it."""

    def __init__(self, client, channel_id: int, *, signer_key: bytes | None = None,
                 chain_id: int | None = None, channel_for_voucher: int | None = None):
        self.client = client
        self.channel_id = channel_id
        deployment = client.deployment
        self.signer = VoucherSigner(chain_id or deployment.chain_id, deployment.channels)
        self.key = signer_key or bytes(client.sender.account.key)
        self.voucher_channel = channel_for_voucher or channel_id
        self.amount = 0
        self.sent: list[int] = []

    async def pay(self, wei: int) -> dict:
        self.amount += wei
        self.sent.append(self.amount)
        voucher = self.signer.sign(self.key, self.voucher_channel, self.amount)
        return {"type": "voucher", **voucher.to_json()}

    def payment(self, every: int = 4) -> Payment:
        return Payment(channel_id=self.channel_id, price_per_token_wei=PRICE, every=every,
                       pay=self.pay)


async def channel_to(on_anvil, host, payer: str = "platform", deposit: int = DEPOSIT) -> int:
    return await Channels(on_anvil.chain(payer)).open(host.address, deposit)


async def stream(host, client, payer: Payer, *, max_tokens=12, every=4, **options):
    request = request_for("Name three colours.", max_tokens=max_tokens)
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    end = await stream_job(host.url, chain_job_id=secrets.randbelow(2**62) + 1,
                           chain_id=client.deployment.chain_id, node_id=host.address,
                           request=request, signer=signer_for(client), on_token=on_token,
                           payment=payer.payment(every), encrypt=True, **options)
    return end, pieces


@pytest.fixture
async def channel_host(on_anvil, llama, tmp_path):
    running = await start_host(on_anvil, llama, tmp_path=tmp_path)
    yield running
    await running.runner.cleanup()


async def test_a_channel_stream_is_paid_by_vouchers_and_nothing_goes_on_chain(
        on_anvil, channel_host):
    host = channel_host
    client = on_anvil.chain("platform")
    channel_id = await channel_to(on_anvil, host)
    market = client.market
    jobs_before = await market.functions.nextJobId().call()
    payer = Payer(client, channel_id)

    end, pieces = await stream(host, client, payer, max_tokens=12, every=4)

    assert end.tokens == len(pieces) > 0 and end.result_hash
    # A voucher every 4 tokens and one after the end: the last covers every token.
    assert payer.sent[-1] == len(pieces) * PRICE
    assert all(b > a for a, b in zip(payer.sent, payer.sent[1:], strict=False))
    held = host.node.credit.desk.book.latest(channel_id)
    assert held == Held(channel_id, client.address, DEPOSIT, len(pieces) * PRICE,
                        held.signature)
    assert await market.functions.nextJobId().call() == jobs_before  # no job, no escrow

    # The host closes with the latest voucher and is paid what it says, less the fee.
    settled = await host.node.channel_watch.redeem(channel_id)
    fee = len(pieces) * PRICE * FEE_BPS // 10_000
    assert (settled.host_amount, settled.fee, settled.refund) == (
        len(pieces) * PRICE - fee, fee, DEPOSIT - len(pieces) * PRICE)


async def test_the_capabilities_advertise_the_channel_terms(on_anvil, channel_host):
    from marketplace.client import pool
    from marketplace.protocol import Capabilities

    async with pool.session().get(f"{channel_host.url}/v1/capabilities") as response:
        capabilities = Capabilities.model_validate(await response.json())
    terms = capabilities.channels
    assert terms is not None
    assert terms.contract == on_anvil.deployment.channels
    assert (int(terms.credit_limit_wei), terms.vouchers_every) == (64 * PRICE, 16)


async def test_a_client_that_stops_paying_is_stopped_within_the_credit_limit(
        on_anvil, llama, tmp_path):
    host = await start_host(on_anvil, llama, tmp_path=tmp_path, credit_limit_wei=5 * PRICE,
                            payment_wait_s=1.0)
    try:
        client = on_anvil.chain("platform")
        channel_id = await channel_to(on_anvil, host)
        payer = Payer(client, channel_id)

        async def never(wei: int) -> dict:  # a voucher that adds nothing
            return {"type": "voucher", **payer.signer.sign(payer.key, channel_id, 0).to_json()}

        payer.pay = never
        pieces: list[str] = []
        with pytest.raises(ClientError) as caught:
            request = request_for("Count from one to fifty.", max_tokens=40)

            async def on_token(piece: str) -> None:
                pieces.append(piece)

            await stream_job(host.url, chain_job_id=77, chain_id=client.deployment.chain_id,
                             node_id=host.address, request=request, signer=signer_for(client),
                             on_token=on_token, payment=payer.payment(every=2), encrypt=True)
        assert caught.value.code == "PAYMENT_REQUIRED"
        assert len(pieces) == 5  # the credit limit, to the token
        # ... and a new stream on the channel is refused until it is paid.
        with pytest.raises(ClientError) as again:
            await stream(host, client, payer)
        assert again.value.code == "PAYMENT_REQUIRED"
    finally:
        await host.runner.cleanup()


def forged(on_anvil, client, channel_id: int, case: str) -> Payer:
    if case == "BAD_VOUCHER":  # signed by someone other than the payer
        return Payer(client, channel_id, signer_key=bytes(
            on_anvil.chain("host-4").sender.account.key))
    if case == "OTHER_CHAIN":  # the same voucher made for another chain id
        return Payer(client, channel_id, chain_id=client.deployment.chain_id + 1)
    if case == "OTHER_CHANNEL":  # a voucher of another channel, sent on this stream
        return Payer(client, channel_id, channel_for_voucher=channel_id + 1)
    raise AssertionError(case)


@pytest.mark.parametrize("case,code", [
    ("BAD_VOUCHER", "BAD_VOUCHER"),
    ("OTHER_CHAIN", "BAD_VOUCHER"),
    ("OTHER_CHANNEL", "NOT_YOUR_CHANNEL"),
])
async def test_a_voucher_the_host_refuses_ends_the_stream_with_its_code(
        on_anvil, channel_host, case, code):
    client = on_anvil.chain("platform")
    channel_id = await channel_to(on_anvil, channel_host)
    payer = forged(on_anvil, client, channel_id, case)

    with pytest.raises(ClientError) as caught:
        await stream(channel_host, client, payer, max_tokens=12, every=2)

    assert caught.value.code == code
    assert channel_host.node.credit.desk.book.latest(channel_id) is None


async def test_a_voucher_over_the_deposit_is_refused(on_anvil, channel_host):
    client = on_anvil.chain("platform")
    channel_id = await channel_to(on_anvil, channel_host, deposit=3 * PRICE)
    payer = Payer(client, channel_id)

    with pytest.raises(ClientError) as caught:
        await stream(channel_host, client, payer, max_tokens=12, every=4)

    assert caught.value.code == "OVER_DEPOSIT"
    assert channel_host.node.credit.desk.book.latest(channel_id) is None


@pytest.mark.parametrize("case", ["someone else's channel", "a channel to another host"])
async def test_a_stream_on_a_channel_that_is_not_the_signers_is_refused(
        on_anvil, llama, tmp_path, channel_host, case):
    client = on_anvil.chain("platform")
    if case == "someone else's channel":
        channel_id = await channel_to(on_anvil, channel_host, payer="host-4")
        code = "BAD_SIGNATURE"
    else:
        other = await start_host(on_anvil, llama, role="host-2", tmp_path=tmp_path)
        try:
            channel_id = await channel_to(on_anvil, other)
        finally:
            await other.runner.cleanup()
        code = "NOT_YOUR_CHANNEL"
    with pytest.raises(ClientError) as caught:
        await stream(channel_host, client, Payer(client, channel_id))
    assert caught.value.code == code


async def test_a_stream_on_an_exiting_channel_is_refused(on_anvil, channel_host):
    client = on_anvil.chain("platform")
    channel_id = await channel_to(on_anvil, channel_host)
    await Channels(client).start_exit(channel_id)

    with pytest.raises(ClientError) as caught:
        await stream(channel_host, client, Payer(client, channel_id))

    assert caught.value.code == "CHANNEL_CLOSED"


async def test_a_host_without_channels_refuses_a_channel_stream(on_anvil, llama, tmp_path):
    host = await start_host(on_anvil, llama, tmp_path=tmp_path, channels=False)
    try:
        client = on_anvil.chain("platform")
        channel_id = await channel_to(on_anvil, host)
        with pytest.raises(ClientError) as caught:
            await stream(host, client, Payer(client, channel_id))
        assert caught.value.code == "CHANNELS_UNSUPPORTED"
    finally:
        await host.runner.cleanup()
