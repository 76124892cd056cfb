"""Sign-In with Ethereum: a signed EIP-4361 message links a wallet and then logs in with
it; a replayed, expired, foreign-domain, foreign-chain or forged message is a 401 with
its own code, and nothing is linked or logged in."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from eth_account import Account
from eth_account.messages import encode_defunct

from accounts.models import SiweNonce, WalletLink
from accounts.siwe import siwe_message, siwe_parse

DOMAIN = "testserver"
CHAIN = 31337
KEY = Account.create("alice's wallet")
OTHER = Account.create("mallory's wallet")


@pytest.fixture(autouse=True)
def chain(settings):
    settings.FUNDS_CHAIN_ID = CHAIN
    settings.FUNDS_SIWE_NONCE_TTL_S = 600


def nonce(client) -> str:
    answer = client.get("/account/wallet/nonce/", {"address": KEY.address.lower()})
    assert answer.status_code == 200
    body = answer.json()
    assert (body["domain"], body["chain_id"], body["address"]) == (DOMAIN, CHAIN, KEY.address)
    return body["nonce"]


def signed(client, *, key=KEY, domain=DOMAIN, chain_id=CHAIN, issued=None, expires=None,
           address=None, the_nonce=None) -> dict:
    message = siwe_message(domain=domain, address=address or key.address,
                           uri=f"http://{domain}/", chain_id=chain_id,
                           nonce=the_nonce or nonce(client),
                           issued_at=issued or datetime.now(UTC), statement="Link my wallet.",
                           expiration_time=expires)
    signature = key.sign_message(encode_defunct(text=message)).signature.hex()
    return {"message": message, "signature": "0x" + signature.removeprefix("0x")}


def post(client, url: str, body: dict):
    return client.post(url, json.dumps(body), content_type="application/json")


def test_a_message_is_read_field_by_field():
    text = siwe_message(domain="example.com", address=KEY.address, uri="https://example.com/",
                        chain_id=1, nonce="abcdefgh12", issued_at=datetime(2026, 1, 2, tzinfo=UTC),
                        statement="Hello.")
    parsed = siwe_parse(text)
    assert (parsed.domain, parsed.address, parsed.statement, parsed.chain_id, parsed.nonce) == (
        "example.com", KEY.address, "Hello.", 1, "abcdefgh12")
    # EIP-4361's layout: address, blank, statement, blank, URI.
    assert text.split("\n")[1:5] == [KEY.address, "", "Hello.", ""]


def test_a_wallet_links_and_then_logs_in(alice_client, alice, client):
    answer = post(alice_client, "/account/wallet/link/", signed(alice_client))
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"address": KEY.address}
    assert WalletLink.objects.get(address=KEY.address).user == alice

    alice_client.logout()
    answer = post(client, "/account/wallet/login/", signed(client))
    assert answer.status_code == 200, answer.content
    assert answer.json()["username"] == "alice"
    assert client.get("/account/").status_code == 200  # logged in as alice


@pytest.mark.parametrize("case, code", [
    ("wrong_domain", "SIWE_WRONG_DOMAIN"),
    ("wrong_chain", "SIWE_WRONG_CHAIN"),
    ("expired", "SIWE_EXPIRED"),
    ("issued_long_ago", "SIWE_EXPIRED"),
    ("forged", "SIWE_BAD_SIGNATURE"),
    ("unknown_nonce", "SIWE_UNKNOWN_NONCE"),
])
def test_a_message_that_proves_nothing_is_a_401_with_its_code(alice_client, case, code):
    now = datetime.now(UTC)
    body = {
        "wrong_domain": lambda: signed(alice_client, domain="evil.example"),
        "wrong_chain": lambda: signed(alice_client, chain_id=1),
        "expired": lambda: signed(alice_client, expires=now - timedelta(seconds=1)),
        "issued_long_ago": lambda: signed(alice_client, issued=now - timedelta(hours=1)),
        # Mallory signs a message that names alice's address.
        "forged": lambda: signed(alice_client, key=OTHER, address=KEY.address),
        "unknown_nonce": lambda: signed(alice_client, the_nonce="madeup12345"),
    }[case]()
    answer = post(alice_client, "/account/wallet/link/", body)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == code
    assert not WalletLink.objects.exists()


def test_a_replayed_message_is_refused(alice_client):
    body = signed(alice_client)
    assert post(alice_client, "/account/wallet/link/", body).status_code == 200
    stranger = Client()  # someone who saw the message and its signature
    answer = post(stranger, "/account/wallet/login/", body)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "SIWE_REPLAYED"
    assert "_auth_user_id" not in stranger.session


def test_a_wallet_nobody_linked_cannot_log_in(client, db):
    answer = post(client, "/account/wallet/login/", signed(client))
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "SIWE_NO_ACCOUNT"


def test_a_wallet_linked_to_alice_cannot_be_linked_by_charlie(alice_client, client, charlie):
    assert post(alice_client, "/account/wallet/link/", signed(alice_client)).status_code == 200
    client.force_login(charlie)
    answer = post(client, "/account/wallet/link/", signed(client))
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "ADDRESS_TAKEN"
    assert WalletLink.objects.get(address=KEY.address).user.username == "alice"


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"message": 1, "signature": 2}'])
def test_a_body_that_is_not_a_signed_message_is_a_400(alice_client, body):
    answer = alice_client.post("/account/wallet/link/", body, content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "INVALID_REQUEST"


def test_a_malformed_message_is_a_401(alice_client):
    answer = post(alice_client, "/account/wallet/link/",
                  {"message": "hello\nworld", "signature": "0x00"})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "SIWE_MALFORMED"


def test_linking_needs_a_logged_in_user(client, db):
    answer = post(client, "/account/wallet/link/", signed(client))
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "UNAUTHENTICATED"


def test_expired_nonces_are_dropped(client, db, settings):
    old = SiweNonce.objects.create(nonce="oldnonce1234")
    SiweNonce.objects.filter(pk=old.pk).update(
        created_at=datetime.now(UTC) - timedelta(seconds=settings.FUNDS_SIWE_NONCE_TTL_S + 1))
    nonce(client)
    assert not SiweNonce.objects.filter(nonce="oldnonce1234").exists()
