"""What a request reserves and pays: the price of the hosts it would really use. A host
registering an absurd price is left out, never obeyed; the caller may set a ceiling,
`max_price_per_token` (docs/trust.md, "Prices"). On the devnet: anvil, our contracts and
real host processes."""

import pytest
from django.test import AsyncClient

from accounts.models import Reservation
from accounts.tiers import price_for
from marketplace.models import JobAttempt
from marketplace.wallet import platform_chain
from tests.conftest import MODEL
from tests.gateway.conftest import nonce

pytestmark = pytest.mark.django_db(transaction=True)

PRICE = 10**9


async def post(who, path: str, **body):
    return await AsyncClient().post(path, headers=who.headers, data=body,
                                    content_type="application/json")


async def test_an_absurd_price_host_is_never_obeyed_the_user_pays_honest_prices(network, alice):
    # `--behaviour absurd-price` registers 10**18 times the price it is given: 1 ETH a token.
    cheap, dear, absurd = network.start_hosts({"host-1": PRICE, "host-2": 2 * PRICE,
                                               "host-3": PRICE},
                                              args={"host-3": ["--behaviour", "absurd-price"]})

    registered = await (await platform_chain()).get_node(absurd.address, MODEL)
    assert registered.price_per_token_wei == PRICE * 10**18

    response = await post(alice, "/v1/inference", model=MODEL, max_tokens=8, temperature=0.0,
                          prompt=f"Name a fruit. ({nonce()})")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["text"] and body["host"] == cheap.address
    reservation = await Reservation.objects.aget()
    # Reserved at the dearest host it would use (any of them may take over on failover).
    assert reservation.amount_wei == price_for("free", 2 * PRICE, 8).charge_wei
    assert reservation.charged_wei == price_for("free", PRICE, body["tokens"]).charge_wei
    assert body["cost"] == str(reservation.charged_wei)
    assert not await JobAttempt.objects.filter(host_address=absurd.address).aexists()


async def test_the_callers_ceiling_leaves_out_dearer_hosts_and_says_when_none_is_left(
        network, alice):
    cheap, _dear = network.start_hosts({"host-1": PRICE, "host-2": 2 * PRICE})
    chat = {"model": MODEL, "max_tokens": 8, "temperature": 0.0}

    response = await post(alice, "/v1/chat/completions", **chat, max_price_per_token=str(PRICE),
                          messages=[{"role": "user", "content": f"Hi ({nonce()})"}])

    assert response.status_code == 200, response.content
    assert response.json()["inkmarket"]["host"] == cheap.address
    reservation = await Reservation.objects.aget()
    assert reservation.amount_wei == price_for("free", PRICE, 8).charge_wei

    refused = await post(alice, "/v1/inference", model=MODEL, prompt="Hello",
                         max_price_per_token=PRICE - 1)
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "NO_HOSTS_WITHIN_PRICE"
    assert error["cheapest_price_per_token"] == str(PRICE)
    assert str(PRICE - 1) in error["message"]
    assert await Reservation.objects.acount() == 1  # the refusal held nothing


@pytest.mark.parametrize("ceiling", ["0", "-1", "12.5", "1e9", "0x10", "9" * 29, 0, -3,
                                     10**28])
async def test_a_malformed_ceiling_is_a_400_with_its_own_code(alice, ceiling):
    for path, body in (("/v1/inference", {"prompt": "Hello"}),
                       ("/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "Hello"}]})):
        response = await post(alice, path, model=MODEL, max_price_per_token=ceiling, **body)

        assert response.status_code == 400, (path, response.content)
        assert response.json()["error"]["code"] == "INVALID_MAX_PRICE"
    assert not await Reservation.objects.aexists()
