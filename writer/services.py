"""Writes of the writer: create a generation (or serve it from the cache), ask a
follow-up of one (writer.conversation), start it, edit it, delete it; and the cost
estimate shown before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from accounts.models import Reservation
from accounts.services import (
    account_get_or_create,
    balance_reserve,
    reservation_release,
    reservation_settle,
)
from accounts.tiers import price_for, settlement_for
from content.postprocess import process
from content.profiles import profile_for
from content.prompts import build_prompt
from marketplace.results import cache_key
from observability.metrics import count_cache_lookup
from writer import selectors
from writer.conversation import MAX_INSTRUCTION_CHARS, Turn, followup_prompt
from writer.models import Generation, Status

CACHE_TTL_S = 3600
MAX_PROMPT_CHARS = 4000


@transaction.atomic
def generation_create(*, user, content_type: str, style: str, length: str, prompt: str,
                      model: str | None = None, max_tokens: int | None = None,
                      temperature: float | None = None,
                      price_cap_wei: int | None = None) -> Generation:
    """A new generation, served from the cache when it can be; otherwise its worst case
    (max tokens at `price_cap_wei`, the dearest usable host's price) is reserved from the user's
    balance, or InsufficientFunds is raised and nothing is created."""
    chosen = profile_for(content_type, length, model=model, max_tokens=max_tokens,
                         temperature=temperature)
    spec = build_prompt(content_type, prompt, style=style, length=length)
    key = cache_key(owner_id=user.pk, model=chosen.model, prompt=spec.text,
                    max_tokens=chosen.max_tokens, temperature=chosen.temperature)
    generation = Generation(
        user=user, content_type=content_type, style=style, length=length, prompt=prompt,
        full_prompt=spec.text, model=chosen.model, max_tokens=chosen.max_tokens,
        temperature=chosen.temperature, cache_key=key)
    return _generation_open(generation, user=user, price_cap_wei=price_cap_wei)


def _generation_open(generation: Generation, *, user, price_cap_wei: int | None) -> Generation:
    """Save a new generation: done at once from the cache, or with its worst case
    reserved."""
    hit = cache.get(f"writer:result:{generation.cache_key}")
    count_cache_lookup(hit=bool(hit), cache="writer")
    if hit:
        generation.text = hit["text"]
        generation.seq = hit["tokens"]
        generation.tokens = hit["tokens"]
        generation.host = hit["host"]
        generation.cached = True
        generation.cost_wei = 0
        generation.status = Status.DONE
        generation.processed = process(generation.content_type, hit["text"],
                                       prompt=generation.prompt)
        generation.finished = timezone.now()
        generation.save()
        return generation
    if price_cap_wei is None:
        raise NoHosts(generation.model)
    generation.price_cap_wei = price_cap_wei
    generation.save()
    account = account_get_or_create(user)
    worst = price_for(account.tier, price_cap_wei, generation.max_tokens).charge_wei
    generation.reservation = balance_reserve(account, amount_wei=worst,
                                             reference=f"writer:{generation.id}")
    generation.save(update_fields=["reservation"])
    return generation


class FollowupRefused(Exception):
    """A follow-up that cannot be asked of this version; `code` says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def followup_not_ready(parent: Generation) -> FollowupRefused | None:
    """Why a change cannot be asked of `parent` yet: it is still being written."""
    if parent.is_live:
        return FollowupRefused("STILL_WRITING", "This version is still being written: wait "
                                                "for it to finish, or stop it, then ask.")
    return None


@transaction.atomic
def generation_followup(*, user, parent: Generation, instruction: str,
                        price_cap_wei: int | None) -> Generation:
    """A follow-up of `parent` (one of the user's generations): a new generation whose
    prompt holds the document's conversation up to `parent` and the change asked
    (writer.conversation.followup_prompt), with the model, budget and template of the
    document, billed like any other. FollowupRefused (STILL_WRITING, NO_TEXT,
    INSTRUCTION_EMPTY, INSTRUCTION_TOO_LONG), writer.conversation.ConversationTooLong,
    InsufficientFunds or NoHosts when it cannot be; then nothing is created."""
    # Under the row's lock: a version still being written has no text to change yet.
    parent = Generation.objects.select_for_update().get(pk=parent.pk, user=user)
    instruction = instruction.strip()
    if not instruction:
        raise FollowupRefused("INSTRUCTION_EMPTY", "Write the change you want first.")
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise FollowupRefused("INSTRUCTION_TOO_LONG",
                              f"Keep the change under {MAX_INSTRUCTION_CHARS} characters.")
    not_ready = followup_not_ready(parent)
    if not_ready is not None:
        raise not_ready
    if not parent.final_text.strip():
        raise FollowupRefused("NO_TEXT", "This version has no text to change: start again "
                                         "with a new prompt.")
    versions = selectors.generation_conversation(generation=parent)
    turns = [Turn(versions[0].full_prompt, versions[0].final_text)]
    turns += [Turn(version.instruction, version.final_text) for version in versions[1:]]
    full_prompt = followup_prompt(turns, instruction)
    key = cache_key(owner_id=user.pk, model=parent.model, prompt=full_prompt,
                    max_tokens=parent.max_tokens, temperature=parent.temperature)
    generation = Generation(
        user=user, content_type=parent.content_type, style=parent.style,
        length=parent.length, prompt=versions[0].prompt, full_prompt=full_prompt,
        model=parent.model, max_tokens=parent.max_tokens, temperature=parent.temperature,
        cache_key=key, root_id=parent.document_id, parent=parent, instruction=instruction)
    return _generation_open(generation, user=user, price_cap_wei=price_cap_wei)


class NoHosts(Exception):
    def __init__(self, model: str):
        super().__init__(f"no host serves {model} right now")
        self.model = model


def group_name(generation_id) -> str:
    """The channel-layer group of a generation's run: its tokens, and a Stop, go there."""
    return f"job-{generation_id}"


def generation_bill(*, generation_id, reservation_id: int | None,
                    node_price_per_token_wei: int, tokens: int, protocol_fee_bps: int) -> int:
    """Settle a finished generation's reservation for the tokens it got (release it all
    when it got none); returns what the user was charged. It goes by the reservation,
    which outlives the generation's row: a generation deleted while it ran is still
    charged for what it delivered."""
    if reservation_id is None:
        return 0
    reservation = Reservation.objects.get(pk=reservation_id)
    if tokens == 0:
        reservation_release(reservation, reason="no tokens delivered")
        charged = 0
    else:
        split = settlement_for(reservation.tier, node_price_per_token_wei, tokens,
                               protocol_fee_bps=protocol_fee_bps)
        reservation_settle(reservation, **split._asdict())
        charged = split.charged_wei
    Generation.objects.filter(pk=generation_id).update(cost_wei=charged)
    return charged


def cache_store(generation: Generation) -> None:
    cache.set(f"writer:result:{generation.cache_key}",
              {"text": generation.text, "tokens": generation.tokens, "host": generation.host},
              CACHE_TTL_S)


def generation_save_edit(*, generation: Generation, text: str) -> Generation:
    generation.edited_text = text
    generation.processed = process(generation.content_type, text,
                                   prompt=generation.prompt)
    generation.save(update_fields=["edited_text", "processed"])
    return generation


def generation_delete(*, generation: Generation) -> None:
    """Forget a generation and the follow-ups made from it. One still running is stopped
    first (the Stop reaches its run from any process, through the group); the run then
    bills the tokens delivered up to the stop, through the reservation, although the row
    is gone."""
    layer = get_channel_layer()
    for version in selectors.generation_descendants(generation=generation):
        if version.is_live:
            async_to_sync(layer.group_send)(group_name(version.id), {"type": "gen.cancel"})
    generation.delete()


@dataclass(frozen=True)
class Estimate:
    model: str
    max_tokens: int
    nodes: int
    cost_wei: int | None
    seconds: float | None
    price_cap_wei: int | None = None
    ceiling_wei: int | None = None  # the user's max price per token, if given
    cheapest_wei: int | None = None

    @property
    def available(self) -> bool:
        return self.nodes > 0 and self.price_cap_wei is not None

    @property
    def above_ceiling(self) -> bool:
        """Hosts serve the model, but none at or below the user's ceiling."""
        return self.nodes > 0 and self.price_cap_wei is None


async def estimate_generation(content_type: str, length: str, *, model: str | None = None,
                              max_tokens: int | None = None, user=None,
                              max_price_per_token: int | None = None) -> Estimate:
    """The worst-case cost (at the price of the dearest host a job would use: no outlier,
    none above the user's `max_price_per_token`; docs/trust.md, "Prices", with the user's
    tier) and the expected time, from the hosts' current prices and measured speed."""
    from asgiref.sync import sync_to_async

    from marketplace.services import price_quote

    chosen = await sync_to_async(profile_for)(content_type, length, model=model,
                                              max_tokens=max_tokens)
    quote = await price_quote(chosen.model)
    if quote is None:
        return Estimate(chosen.model, chosen.max_tokens, 0, None, None)
    tps = quote.tokens_per_s or 100.0
    seconds = (quote.ttft_ms or 300.0) / 1000 + chosen.max_tokens / tps
    tier = "free"
    if user is not None and user.is_authenticated:
        tier = (await sync_to_async(account_get_or_create)(user)).tier
    cap = quote.reserve_price_wei(max_price_per_token)
    cost = None if cap is None else price_for(tier, cap, chosen.max_tokens).charge_wei
    return Estimate(chosen.model, chosen.max_tokens, quote.nodes, cost, round(seconds, 1),
                    price_cap_wei=cap, ceiling_wei=max_price_per_token,
                    cheapest_wei=quote.min_price_wei)
