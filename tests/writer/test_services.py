import importlib
import uuid

import pytest
from django.core.cache import cache

from accounts.models import Reservation
from accounts.services import account_get_or_create, balance_adjust
from content.profiles import Settings, profile_for
from marketplace.results import cache_key
from writer import services
from writer.models import Generation, GenerationProfile, Status

pytestmark = pytest.mark.django_db


def key(**overrides):
    fields = {"owner_id": 1, "model": "smollm2-135m-instruct", "prompt": "Write about owls.",
              "max_tokens": 96, "temperature": 0.3}
    fields.update(overrides)
    return cache_key(**fields)


def test_the_cache_key_is_a_sha256_of_the_normalized_request():
    assert len(key()) == 64 and int(key(), 16) >= 0
    assert key(model="  SmolLM2-135M-Instruct ") == key()
    assert key(prompt="  Write   about\nowls. ") == key()
    assert key(temperature=0.3000001) == key()


@pytest.mark.parametrize("change", [{"owner_id": 2}, {"model": "other-model"},
                                    {"prompt": "Write about bats."},
                                    {"prompt": "write about owls."}, {"max_tokens": 97},
                                    {"temperature": 0.4}])
def test_the_cache_key_changes_with_what_changes_the_answer(change):
    assert key(**change) != key()


@pytest.fixture
def seeded_profiles():
    """The profiles the migration seeds. A transactional test that ran earlier in the same
    process empties every table when it ends (under pytest-xdist the order is not
    Django's, which runs those last), so they are seeded here again as the migration
    does, from its own figures."""
    seed = importlib.import_module("writer.migrations.0002_seed_profiles")
    for content_type, lengths in seed.MAX_TOKENS.items():
        for length, tokens in lengths.items():
            GenerationProfile.objects.get_or_create(
                content_type=content_type, length=length,
                defaults={"model": "smollm2-135m-instruct", "max_tokens": tokens,
                          "temperature": seed.TEMPERATURE[content_type]})


@pytest.mark.usefixtures("seeded_profiles")
def test_profiles_are_seeded_for_every_type_and_length():
    assert GenerationProfile.objects.count() == 12
    summary = profile_for("summary", "short")
    assert (summary.model, summary.max_tokens) == ("smollm2-135m-instruct", 96)


@pytest.mark.usefixtures("seeded_profiles")
def test_an_edited_profile_and_the_advanced_override_decide_the_settings():
    GenerationProfile.objects.filter(content_type="blog", length="short").update(
        max_tokens=200, temperature=0.5)
    assert profile_for("blog", "short") == Settings("smollm2-135m-instruct", 200, 0.5)
    assert profile_for("blog", "short", model="m2", max_tokens=64, temperature=0.0) == (
        Settings("m2", 64, 0.0))


@pytest.fixture
def cached_result():
    prompt = f"Owls {uuid.uuid4()}"
    made = []

    def store(text: str, owner) -> str:
        generation = Generation(content_type="summary", style="casual", length="short",
                                prompt=prompt, text=text, tokens=7, host="0xabc")
        chosen = profile_for("summary", "short")
        from content.prompts import build_prompt

        full = build_prompt("summary", prompt, style="casual", length="short").text
        generation.cache_key = cache_key(
            owner_id=owner.pk, model=chosen.model, prompt=full,
            max_tokens=chosen.max_tokens, temperature=chosen.temperature)
        services.cache_store(generation)
        made.append(generation.cache_key)
        return prompt

    yield store
    for k in made:
        cache.delete(f"writer:result:{k}")


def test_a_cache_hit_is_done_at_once_marked_and_costs_nothing(alice, cached_result):
    prompt = cached_result("- Owls hunt at night.\n- <b>Soft</b> feathers.", alice)
    account = account_get_or_create(alice)
    before = account.balance_wei
    generation = services.generation_create(user=alice, content_type="summary", style="casual",
                                            length="short", prompt=prompt)
    assert generation.cached and generation.status == Status.DONE
    assert int(generation.cost_wei) == 0 and generation.reservation is None
    assert generation.processed["points"] == ["Owls hunt at night.", "<b>Soft</b> feathers."]
    account.refresh_from_db()
    assert account.balance_wei == before and account.held_wei == 0


def test_another_users_cached_result_is_never_served(alice, bob, cached_result):
    """The attack: ask the prompt someone else may have asked, hoping for "cached"."""
    prompt = cached_result("- Alice's private answer.", alice)
    with pytest.raises(services.NoHosts):  # a miss: it would have to run, and no host serves
        services.generation_create(user=bob, content_type="summary", style="casual",
                                   length="short", prompt=prompt)
    assert not Generation.objects.filter(user=bob).exists()


def test_without_hosts_nothing_is_created_or_reserved(alice):
    with pytest.raises(services.NoHosts):
        services.generation_create(user=alice, content_type="blog", style="casual",
                                   length="short", prompt=f"Owls {uuid.uuid4()}")
    assert not Generation.objects.exists()
    assert not Reservation.objects.exists()


def test_a_generation_reserves_its_worst_case_and_a_failure_releases_it(alice):
    account = account_get_or_create(alice)
    before = account.balance_wei
    generation = services.generation_create(user=alice, content_type="summary", style="casual",
                                            length="short", prompt=f"Owls {uuid.uuid4()}",
                                            price_cap_wei=10**9)
    account.refresh_from_db()
    assert account.held_wei > 0 and generation.reservation is not None
    assert services.generation_bill(generation_id=generation.id,
                                    reservation_id=generation.reservation_id,
                                    node_price_per_token_wei=0, tokens=0,
                                    protocol_fee_bps=0) == 0
    account.refresh_from_db()
    assert account.balance_wei == before and account.held_wei == 0


def test_a_balance_short_of_the_worst_case_is_refused(alice):
    from accounts.errors import InsufficientFunds

    account = account_get_or_create(alice)
    balance_adjust(account, amount_wei=-account.balance_wei, memo="test: empty")
    with pytest.raises(InsufficientFunds):
        services.generation_create(user=alice, content_type="blog", style="casual",
                                   length="long", prompt="Owls", price_cap_wei=10**9)
    assert not Generation.objects.exists()


def test_an_edit_is_saved_and_shaped_again(alice):
    generation = Generation.objects.create(
        user=alice, content_type="blog", style="casual", length="short", prompt="owls at night",
        full_prompt="p", model="m", max_tokens=10, temperature=0.5, cache_key="k",
        status="done", text="Old.")
    services.generation_save_edit(generation=generation, text="Owls fly silently.")
    generation.refresh_from_db()
    assert generation.edited_text == "Owls fly silently." and generation.text == "Old."
    assert generation.processed["title"] == "Owls at night"
    assert generation.final_text == "Owls fly silently."
