"""The Add funds page and its forms, without a chain: what it shows, and what it refuses
(a malformed amount or transaction hash, an unlinked address, test ether off the devnet),
each without moving money."""

import pytest

from accounts.models import Payout, WalletLink
from accounts.services import account_get_or_create
from marketplace.chain.contracts import Deployment
from marketplace.chain.deploy import deployment_path
from writer.funds_views import wei_from_eth

WALLET = "0x00000000000000000000000000000000000A11cE"
BOX = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


@pytest.fixture
def recorded(settings, tmp_path):
    settings.CHAIN_DEPLOYMENTS_DIR = tmp_path
    settings.FUNDS_CHAIN_ID = 31337
    deployment = Deployment(chain_id=31337, registry=BOX, marketplace=BOX, escrow=BOX,
                            deposits=BOX)
    deployment_path(tmp_path, 31337).write_text(deployment.to_json())
    return deployment


@pytest.fixture
def funded(alice, settings):
    settings.ACCOUNTS_SIGNUP_CREDIT_WEI = 10**18
    settings.FUNDS_WITHDRAWAL_MIN_WEI = 10**14
    settings.FUNDS_WITHDRAWAL_APPROVAL_WEI = 5 * 10**17
    account = account_get_or_create(alice)
    WalletLink.objects.create(user=alice, address=WALLET)
    return account


@pytest.mark.parametrize("text, wei", [("1", 10**18), ("0.05", 5 * 10**16),
                                       ("0.000000000000000001", 1), (" 2.5 ", 25 * 10**17)])
def test_amounts_in_ether_become_exact_wei(text, wei):
    assert wei_from_eth(text) == wei


@pytest.mark.parametrize("text", ["", "0", "-1", "abc", "1e400", "1000000001", "NaN", "Infinity",
                                  "0.0000000000000000001"])
def test_an_amount_that_is_not_a_positive_whole_number_of_wei_is_refused(text):
    assert wei_from_eth(text) is None


def test_the_page_shows_the_contract_the_reference_and_a_qr_code(alice_client, recorded):
    page = alice_client.get("/account/funds/")
    assert page.status_code == 200
    html = page.content.decode()
    account = account_get_or_create(page.wsgi_request.user)
    assert BOX in html and account.deposit_ref in html
    assert f"ethereum:{BOX}@31337/deposit?bytes32={account.deposit_ref}" in html
    assert "<svg" in html  # the QR code, drawn on the server
    assert 'id="faucet-button"' in html  # the devnet's "Get test ETH"


def test_without_a_deposit_contract_the_page_says_so(alice_client, settings, tmp_path):
    settings.CHAIN_DEPLOYMENTS_DIR = tmp_path / "none"
    page = alice_client.get("/account/funds/")
    assert page.status_code == 200
    assert b"Deposits are not available" in page.content


def test_off_the_devnet_there_is_no_faucet(alice_client, recorded, settings):
    settings.FUNDS_CHAIN_ID = 11155111
    assert b"faucet-button" not in alice_client.get("/account/funds/").content
    answer = alice_client.post("/account/funds/faucet", {"address": WALLET})
    assert answer.status_code == 400


@pytest.mark.parametrize("tx", ["", "0x12", "0x" + "g" * 64, "12" * 33])
def test_progress_of_something_that_is_not_a_transaction_hash_is_a_400(alice_client, tx):
    assert alice_client.get("/account/funds/progress", {"tx": tx}).status_code == 400


@pytest.mark.parametrize("form, says", [
    ({"address": WALLET, "amount": "abc"}, "Give the amount in ETH"),
    ({"address": WALLET, "amount": "0"}, "Give the amount in ETH"),
    ({"address": "0x000000000000000000000000000000000000bEEF", "amount": "0.01"},
     "is not linked to this account"),
    ({"address": WALLET, "amount": "5"}, "wei available"),
    ({"address": WALLET, "amount": "0.00001"}, "the smallest withdrawal"),
])
def test_a_bad_withdrawal_says_why_and_takes_nothing(alice_client, funded, recorded, form,
                                                     says):
    answer = alice_client.post("/account/funds/withdraw", form, follow=True)
    assert says in answer.content.decode()
    funded.refresh_from_db()
    assert funded.balance_wei == 10**18 and not Payout.objects.exists()


def test_a_withdrawal_from_the_page_is_queued_and_listed(alice_client, funded, recorded):
    answer = alice_client.post("/account/funds/withdraw", {"address": WALLET,
                                                           "amount": "0.25"}, follow=True)
    assert "on its way" in answer.content.decode()
    payout = Payout.objects.get()
    assert (payout.amount_wei, payout.to_address) == (25 * 10**16, WALLET)
    assert 'id="withdrawal-history"' in answer.content.decode()


def test_a_large_withdrawal_says_it_waits_for_a_review(alice_client, funded, recorded):
    answer = alice_client.post("/account/funds/withdraw", {"address": WALLET,
                                                           "amount": "0.75"}, follow=True)
    assert "waits for approval" in answer.content.decode()
    assert Payout.objects.get().state == "awaiting_approval"


def test_the_page_needs_a_login(client, db):
    assert client.get("/account/funds/").status_code == 302
