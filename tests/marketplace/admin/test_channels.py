import pytest
from django.utils import timezone

from marketplace.models import PaymentChannel, PaymentChannelState

pytestmark = pytest.mark.django_db

HOST = "0x" + "ab" * 20


@pytest.fixture
def channel():
    return PaymentChannel.objects.create(
        chain_id=31337, contract="0x" + "cd" * 20, channel_id=7, payer_address="0x" + "ef" * 20,
        host_address=HOST, state=PaymentChannelState.OPEN, deposit_wei=10**16,
        spent_wei=3 * 10**15, reserved_wei=10**15, last_used_at=timezone.now())


def test_channels_are_listed_with_their_money(admin_client, channel):
    page = admin_client.get("/admin/marketplace/paymentchannel/")
    assert page.status_code == 200
    body = page.content.decode()
    assert HOST in body
    assert "0.01 ETH" in body and "0.003 ETH" in body  # deposit, spent
    assert "0.006 ETH" in body  # remaining: 10 - 3 - 1 (reserved) milli-ETH


def test_start_exit_hands_an_open_channel_to_the_beat(admin_client, channel):
    closed = PaymentChannel.objects.create(
        chain_id=31337, contract=channel.contract, channel_id=6,
        payer_address=channel.payer_address, host_address=HOST,
        state=PaymentChannelState.CLOSED, deposit_wei=10**16)
    page = admin_client.post("/admin/marketplace/paymentchannel/",
                             {"action": "start_exit", "_selected_action": [channel.pk, closed.pk]},
                             follow=True)
    assert page.status_code == 200
    channel.refresh_from_db()
    closed.refresh_from_db()
    assert (channel.state, channel.exit_at) == (PaymentChannelState.EXITING, None)
    assert channel.txs[-1]["kind"] == "exit-requested"
    assert closed.state == PaymentChannelState.CLOSED
    assert "1 channel(s) will exit; 1 not open" in page.content.decode()


def test_channels_cannot_be_added_or_deleted_by_hand(admin_client, channel):
    assert admin_client.get("/admin/marketplace/paymentchannel/add/").status_code == 403
    url = f"/admin/marketplace/paymentchannel/{channel.pk}/delete/"
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert admin_client.get(f"/admin/marketplace/paymentchannel/{channel.pk}/change/"
                            ).status_code == 200
