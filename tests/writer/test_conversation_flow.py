"""A document's conversation on the real marketplace (anvil, host processes, the bundled
model): follow-ups asked through the page's view run in the document's session, so they
stay on one host; when that host dies, the next turn goes to another with the whole
context in its prompt."""

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache

from marketplace.client.runner import _session_key
from marketplace.models import Job, JobAttempt
from writer import selectors, services
from writer.conversation import PRESETS
from writer.models import Generation, Status
from writer.runner import run_generation

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = 10**9
TURNS = 20
CHANGES = ["shorter", "formal", "friendlier", "action"]


def no_verification(settings) -> None:
    """The verifier re-scores each whole prompt again (no KV cache) and has tests of its
    own; these are about where a conversation's turns go, 20 times faster without it."""
    settings.MARKETPLACE_VERIFY_PROBATION = 0
    settings.MARKETPLACE_VERIFY_FRACTION = 0.0


async def finished(pk) -> Generation:
    for _ in range(6000):
        generation = await Generation.objects.aget(pk=pk)
        if not generation.is_live:
            return generation
        await asyncio.sleep(0.02)
    raise AssertionError(f"generation {pk} did not finish")


async def ask(async_client, parent: Generation, number: int) -> Generation:
    """The page's follow-up form: a button, or every fifth turn words of one's own."""
    form = {"instruction": f"Mention room {number}."} if number % 5 == 0 \
        else {"preset": CHANGES[number % len(CHANGES)]}
    response = await async_client.post(f"/g/{parent.id}/followup", form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    pk = response["Location"].rstrip("/").rsplit("/", 1)[-1]
    return await finished(uuid.UUID(pk))


async def hosts_of(generation: Generation) -> list[str]:
    return [a.host_address async for a in
            JobAttempt.objects.filter(job_id=generation.job_id).order_by("number")]


async def test_a_20_prompt_conversation_keeps_its_host_and_moves_with_its_context(
        network, async_client, alice, settings):
    no_verification(settings)
    settings.MARKETPLACE_CHANNELS = True  # the product's default
    network.start_hosts({"host-1": PRICE, "host-2": PRICE})
    await async_client.aforce_login(alice)
    first = await sync_to_async(services.generation_create)(
        user=alice, content_type="email", style="casual", length="short",
        prompt=f"the office move ({uuid.uuid4().hex[:8]})", max_tokens=8, temperature=0.0,
        price_cap_wei=PRICE)
    await run_generation(first.id)
    turns = [await finished(first.id)]
    for number in range(1, TURNS):
        turns.append(await ask(async_client, turns[-1], number))

    for generation in turns:
        assert generation.status == Status.DONE, generation.error_message
        assert generation.text and 0 < generation.tokens <= 8
    # Kept in order, each a change of the one before, in one document.
    versions = await sync_to_async(selectors.document_versions)(generation=turns[-1])
    assert [v.id for v in versions] == [t.id for t in turns]
    assert [t.parent_id for t in turns[1:]] == [t.id for t in turns[:-1]]
    assert turns[1].instruction == PRESETS["formal"][1]
    assert turns[5].instruction == "Mention room 5."
    # Nothing failed: one attempt each, and every turn on the host of the first.
    hosts = [await hosts_of(t) for t in turns]
    assert all(len(h) == 1 for h in hosts), hosts
    assert len({h[0] for h in hosts[1:]}) == 1 and hosts[1] == hosts[0]
    # Every turn was paid through one channel to that host: no job on chain.
    attempts = [a async for a in JobAttempt.objects.filter(
        job_id__in=[t.job_id for t in turns])]
    assert all(a.channel_id and a.chain_job_id is None and a.voucher_wei > 0
               for a in attempts)
    assert len({a.channel_id for a in attempts}) == 1
    # ... because they ran in the document's session, which remembers its host.
    assert first.session == f"writer:{first.id}"
    assert all(t.session == first.session for t in turns)
    assert await cache.aget(_session_key(first.session)) == hosts[-1][0]
    # Each prompt carried the context: the request, and the turn before with its answer.
    for before, generation in zip(turns, turns[1:], strict=False):
        assert generation.full_prompt.startswith(first.full_prompt)
        assert before.text.strip() in generation.full_prompt
        job = await Job.objects.aget(pk=generation.job_id)
        assert job.prompt == generation.full_prompt  # what the host was sent

    # The conversation's host dies between two turns.
    [dead] = [h for h in network.hosts if h.address == hosts[-1][0]]
    dead.kill()
    last = await ask(async_client, turns[-1], TURNS)
    assert last.status == Status.DONE, last.error_message
    assert last.host != dead.address and last.host
    # The next host got the whole context again: every earlier change and the last text.
    assert last.full_prompt.startswith(first.full_prompt)
    for generation in turns[1:]:
        assert f"Change: {generation.instruction}" in last.full_prompt
    assert turns[-1].text.strip() in last.full_prompt
    assert await cache.aget(_session_key(first.session)) == last.host
