"""GET /v1/account, GET /v1/account/deposits, POST and GET /v1/withdrawals: the caller's
own money only, withdrawals to linked wallets only, every error in the one shape."""

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts import funds
from accounts.models import Payout, WalletLink
from gateway.api import api
from tests.gateway.conftest import CREDIT, _named

pytestmark = pytest.mark.django_db(transaction=True)
WALLET = "0x00000000000000000000000000000000000A11cE"


@pytest.fixture(autouse=True)
def limits(settings):
    settings.FUNDS_WITHDRAWAL_MIN_WEI = 1
    settings.FUNDS_WITHDRAWAL_APPROVAL_WEI = CREDIT
    settings.FUNDS_WITHDRAWAL_DAILY_LIMIT_WEI = CREDIT
    settings.FUNDS_CONFIRMATIONS = 7
    settings.FUNDS_CHAIN_ID = 31337


async def get(who, path):
    return await AsyncClient().get(path, headers=who.headers)


async def withdraw(who, body):
    return await AsyncClient().post("/v1/withdrawals", data=body, headers=who.headers,
                                    content_type="application/json")


async def test_the_account_says_balance_and_where_to_deposit(alice, bob):
    answer = await get(alice, "/v1/account")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["balance"], body["held"], body["chain_id"], body["confirmations_needed"]) == (
        str(CREDIT), "0", 31337, 7)
    assert len(body["deposit_reference"]) == 66
    theirs = (await get(bob, "/v1/account")).json()
    assert theirs["deposit_reference"] != body["deposit_reference"]


async def test_deposits_list_only_the_callers_own(alice, bob):
    def record():
        ref = funds.account_deposit_ref(alice.user.account)
        funds.deposit_record(chain_id=31337, tx_hash="0x" + "aa" * 32, log_index=2,
                             block_number=9, block_hash="0x" + "bb" * 32,
                             sender=WALLET, ref=ref, amount_wei=12345)

    await sync_to_async(record)()
    mine = (await get(alice, "/v1/account/deposits")).json()
    assert [(d["tx_hash"], d["log_index"], d["amount"], d["state"]) for d in mine] == [
        ("0x" + "aa" * 32, 2, "12345", "credited")]
    assert (await get(bob, "/v1/account/deposits")).json() == []


async def test_a_withdrawal_to_a_linked_wallet_is_accepted_and_listed(alice):
    await WalletLink.objects.acreate(user=alice.user, address=WALLET)
    answer = await withdraw(alice, {"address": WALLET.lower(), "amount": "1000"})
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert (body["address"], body["amount"], body["state"]) == (WALLET, "1000", "queued")
    assert (await get(alice, "/v1/account")).json()["balance"] == str(CREDIT - 1000)
    listed = (await get(alice, "/v1/withdrawals")).json()
    assert [w["id"] for w in listed] == [body["id"]]


@pytest.mark.parametrize("body, status, code", [
    ({"address": WALLET, "amount": str(CREDIT + 1)}, 402, "INSUFFICIENT_FUNDS"),
    ({"address": "0x000000000000000000000000000000000000bEEF", "amount": "1"}, 400,
     "UNLINKED_ADDRESS"),
    ({"address": "0x12", "amount": "1"}, 400, "INVALID_REQUEST"),
    ({"address": WALLET.replace("A11cE", "a11cE"), "amount": "1"}, 400, "INVALID_ADDRESS"),
    ({"address": WALLET, "amount": "0"}, 400, "INVALID_REQUEST"),
    ({"address": WALLET, "amount": "-5"}, 400, "INVALID_REQUEST"),
    ({"address": WALLET, "amount": "9" * 5000}, 400, "INVALID_REQUEST"),
    ({"address": WALLET, "amount": 5}, 400, "INVALID_REQUEST"),
    ({"address": WALLET}, 400, "INVALID_REQUEST"),
])
async def test_a_bad_withdrawal_is_refused_with_its_code_and_takes_nothing(alice, body,
                                                                          status, code):
    await WalletLink.objects.acreate(user=alice.user, address=WALLET)
    answer = await withdraw(alice, body)
    assert answer.status_code == status, answer.content
    assert answer.json()["error"]["code"] == code
    assert (await get(alice, "/v1/account")).json()["balance"] == str(CREDIT)
    assert not await Payout.objects.aexists()


async def test_over_the_daily_limit_is_a_429(alice, settings):
    settings.FUNDS_WITHDRAWAL_DAILY_LIMIT_WEI = 1500
    await WalletLink.objects.acreate(user=alice.user, address=WALLET)
    assert (await withdraw(alice, {"address": WALLET, "amount": "1000"})).status_code == 202
    answer = await withdraw(alice, {"address": WALLET, "amount": "1000"})
    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "DAILY_LIMIT_EXCEEDED"


async def test_a_key_without_the_withdraw_scope_cannot_withdraw(transactional_db):
    reader = await sync_to_async(_named)("reader", scopes=["usage:read"])
    await WalletLink.objects.acreate(user=reader.user, address=WALLET)
    answer = await withdraw(reader, {"address": WALLET, "amount": "10"})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "FORBIDDEN"
    assert (await get(reader, "/v1/account")).status_code == 200


async def test_without_a_key_it_is_a_401(transactional_db):
    answer = await AsyncClient().get("/v1/account")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "UNAUTHENTICATED"


def test_the_schema_publishes_the_money_routes_and_their_errors():
    schema = api.get_openapi_schema()
    paths = schema["paths"]
    assert set(paths["/v1/account"]) == {"get"}
    assert set(paths["/v1/account/deposits"]) == {"get"}
    assert set(paths["/v1/withdrawals"]) == {"get", "post"}
    post = paths["/v1/withdrawals"]["post"]
    assert {202, 400, 401, 402, 403, 413, 429, 500} <= {int(s) for s in post["responses"]}
