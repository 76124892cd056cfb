"""A generation through the real marketplace: reserve, stream, shape, settle, cache."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from accounts.errors import InsufficientFunds
from accounts.models import Reservation, ReservationState
from accounts.services import account_get_or_create, balance_adjust
from accounts.tiers import price_for
from marketplace.models import Job
from writer import services
from writer.models import Generation, Status
from writer.runner import run_generation

pytestmark = pytest.mark.django_db(transaction=True)
PROMPT = "Owls hunt at night. Their feathers are soft so they fly silently."


async def test_a_generation_streams_is_shaped_charged_once_and_cached(network, alice):
    network.start_hosts({"host-1": 10**9})
    estimate = await services.estimate_generation("summary", "short", user=alice)
    assert estimate.available and estimate.price_cap_wei == 10**9
    account = await sync_to_async(account_get_or_create)(alice)
    before = account.balance_wei
    generation = await sync_to_async(services.generation_create)(
        user=alice, content_type="summary", style="casual", length="short", prompt=PROMPT,
        price_cap_wei=estimate.price_cap_wei)
    await run_generation(generation.id)
    done = await Generation.objects.aget(pk=generation.id)
    assert done.status == Status.DONE, done.error_message
    assert done.text and done.tokens > 0
    assert done.processed["points"]
    charge = price_for("free", 10**9, done.tokens).charge_wei
    assert int(done.cost_wei) == charge
    await account.arefresh_from_db()
    assert account.balance_wei == before - charge
    assert account.held_wei == 0

    again = await sync_to_async(services.generation_create)(
        user=alice, content_type="summary", style="casual", length="short", prompt=PROMPT,
        price_cap_wei=estimate.price_cap_wei)
    assert again.cached and again.status == Status.DONE
    assert again.text == done.text and int(again.cost_wei) == 0
    await account.arefresh_from_db()
    assert account.balance_wei == before - charge  # a cache hit costs nothing


async def test_a_balance_short_of_the_worst_case_creates_nothing(alice):
    account = await sync_to_async(account_get_or_create)(alice)
    await sync_to_async(balance_adjust)(account, amount_wei=-account.balance_wei + 10,
                                        memo="test: nearly empty")
    with pytest.raises(InsufficientFunds) as info:
        await sync_to_async(services.generation_create)(
            user=alice, content_type="blog", style="casual", length="long", prompt="Owls",
            price_cap_wei=10**9)
    assert info.value.available_wei == 10
    assert not await Generation.objects.filter(prompt="Owls").aexists()
    await account.arefresh_from_db()
    assert account.balance_wei == 10 and account.held_wei == 0


async def test_deleting_a_running_generation_stops_it_and_charges_what_it_delivered(
        network, alice):
    """The attack: read the tokens as they stream in, then delete the generation, hoping
    the bill finds no row and the reservation is later released in full."""
    network.start_hosts({"host-1": 10**9})
    account = await sync_to_async(account_get_or_create)(alice)
    before = account.balance_wei
    generation = await sync_to_async(services.generation_create)(
        user=alice, content_type="blog", style="casual", length="long", prompt=PROMPT,
        price_cap_wei=10**9)
    run = asyncio.create_task(run_generation(generation.id))
    for _ in range(6000):  # until the first tokens are out
        if (await Generation.objects.aget(pk=generation.id)).status == Status.STREAMING:
            break
        await asyncio.sleep(0.02)
    await sync_to_async(services.generation_delete)(
        generation=await Generation.objects.aget(pk=generation.id))
    await asyncio.wait_for(run, 120)

    assert not await Generation.objects.filter(pk=generation.id).aexists()
    job = await Job.objects.filter(owner_id=alice.id).alatest("created")
    assert 0 < job.tokens < generation.max_tokens  # stopped, not run to the end
    reservation = await Reservation.objects.aget(reference=f"writer:{generation.id}")
    assert reservation.state == ReservationState.SETTLED
    charge = price_for("free", 10**9, job.tokens).charge_wei
    assert reservation.charged_wei == charge
    await account.arefresh_from_db()
    assert account.balance_wei == before - charge and account.held_wei == 0
