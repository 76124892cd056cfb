"""The writer's estimate and reservation are at the price of the hosts a generation
would use: an absurd-price host beside an honest one sets neither, and the ceiling from
the Advanced panel leaves dearer hosts out (docs/trust.md, "Prices"). On the devnet."""

import pytest
from asgiref.sync import sync_to_async

from accounts.models import Reservation
from accounts.tiers import price_for
from writer import services
from writer.models import Generation, Status
from writer.runner import run_generation

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = 10**9


async def test_an_absurd_price_host_sets_neither_the_estimate_nor_the_charge(network, alice):
    honest, _absurd = network.start_hosts({"host-1": PRICE, "host-2": 10**27})

    estimate = await services.estimate_generation("summary", "short", user=alice)
    assert estimate.available and estimate.nodes == 2 and estimate.price_cap_wei == PRICE
    generation = await sync_to_async(services.generation_create)(
        user=alice, content_type="summary", style="casual", length="short",
        prompt="Bees make honey from nectar.", price_cap_wei=estimate.price_cap_wei)
    reservation = await Reservation.objects.aget()
    assert reservation.amount_wei == price_for("free", PRICE, generation.max_tokens).charge_wei
    await run_generation(generation.id)

    done = await Generation.objects.aget(pk=generation.id)
    assert done.status == Status.DONE, done.error_message
    assert done.host == honest.address
    assert int(done.cost_wei) == price_for("free", PRICE, done.tokens).charge_wei


async def test_the_ceiling_from_advanced_leaves_dearer_hosts_out(network, alice):
    network.start_hosts({"host-1": PRICE, "host-2": 2 * PRICE})

    assert (await services.estimate_generation(
        "summary", "short", user=alice)).price_cap_wei == 2 * PRICE
    within = await services.estimate_generation("summary", "short", user=alice,
                                                max_price_per_token=PRICE)
    assert within.available and within.price_cap_wei == PRICE
    below = await services.estimate_generation("summary", "short", user=alice,
                                               max_price_per_token=PRICE - 1)
    assert below.above_ceiling and not below.available
    assert (below.ceiling_wei, below.cheapest_wei, below.cost_wei) == (PRICE - 1, PRICE, None)
