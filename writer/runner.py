"""Runs a generation through the marketplace and tells the browser about it.

Tokens go to the channel-layer group `job-<id>`. Channel layers may drop messages, so the
text so far is also saved with its token count; a (re)connecting page and the end of the
job send the whole text once. A Stop from any page reaches the job through the same group.
Every generation of one document runs in the document's session (writer.models), so a
follow-up goes first to the host that answered the turn before.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.utils import timezone

from content.postprocess import process
from marketplace.client.errors import ClientError
from marketplace.services import JobSpec, run_job
from writer.conversation import clean_spec
from writer.models import Generation, Status
from writer.services import cache_store, generation_bill, group_name

log = logging.getLogger(__name__)
SAVE_EVERY_S = 0.3


def live_key(generation_id) -> str:
    return f"writer:live:{generation_id}"


async def live_text(generation: Generation) -> tuple[str, int]:
    """The freshest text of a generation: the live copy while it runs, else the database's."""
    if generation.is_live:
        live = await cache.aget(live_key(generation.id))
        if live and live["seq"] >= generation.seq:
            return live["text"], live["seq"]
    return generation.text, generation.seq


async def run_generation(generation_id) -> None:
    generation = await Generation.objects.aget(pk=generation_id)
    layer = get_channel_layer()
    group = group_name(generation.id)
    cancel = asyncio.Event()
    pieces: list[str] = []
    last_save = 0.0
    started = time.perf_counter()

    async def save(**fields) -> None:
        await Generation.objects.filter(pk=generation.id).aupdate(**fields)

    # Listen on the group for a Stop, from whichever process serves the page.
    channel = await layer.new_channel()
    await layer.group_add(group, channel)

    async def listen() -> None:
        while True:
            message = await layer.receive(channel)
            if message.get("type") == "gen.cancel":
                cancel.set()

    listener = asyncio.create_task(listen())

    async def on_token(index: int, text: str) -> None:
        nonlocal last_save
        del pieces[index:]
        pieces.append(text)
        if index == 0:
            await save(status=Status.STREAMING,
                       ttft_ms=round((time.perf_counter() - started) * 1000, 1))
        # The live copy first, then the message: a page that sees a gap reads it back.
        await cache.aset(live_key(generation.id), {"text": "".join(pieces), "seq": len(pieces)},
                         3600)
        await layer.group_send(group, {"type": "gen.token", "index": index, "text": text,
                                       "max": generation.max_tokens})
        now = time.monotonic()
        if now - last_save > SAVE_EVERY_S:
            last_save = now
            await save(text="".join(pieces), seq=len(pieces))

    async def on_state(state: str, detail: dict) -> None:
        if state == "REWOUND":
            del pieces[detail["index"]:]
            await save(text="".join(pieces), seq=len(pieces))
            await cache.aset(live_key(generation.id),
                             {"text": "".join(pieces), "seq": len(pieces)}, 3600)
            await layer.group_send(group, {"type": "gen.reset"})
        await layer.group_send(group, {"type": "gen.state", "state": state})

    spec = JobSpec(model=generation.model, prompt=generation.full_prompt,
                   max_tokens=generation.max_tokens, temperature=generation.temperature,
                   content_type=generation.content_type, owner_id=generation.user_id,
                   max_price_per_token_wei=int(generation.price_cap_wei)
                   if generation.price_cap_wei is not None else None,
                   # The document's conversation: its follow-ups go first to the host that
                   # answered the last turn (the prompt holds the whole context).
                   session=generation.session)
    billed = False

    async def bill(price: int, tokens: int) -> None:
        nonlocal billed
        if billed:
            return
        billed = True
        from marketplace.wallet import platform_chain

        fee_bps = await (await platform_chain()).fee_bps() if tokens else 0
        await sync_to_async(generation_bill)(generation_id=generation.id,
                                             reservation_id=generation.reservation_id,
                                             node_price_per_token_wei=price, tokens=tokens,
                                             protocol_fee_bps=fee_bps)
    try:
        outcome = await run_job(spec, on_token=on_token, on_state=on_state, cancel=cancel)
    except ClientError as exc:
        text = "".join(pieces)
        status = Status.CANCELLED if exc.code == "CANCELLED" else Status.FAILED
        await bill(0, 0)  # nothing was settled on chain for it: nothing is charged
        await save(status=status, text=text, seq=len(pieces), error_code=exc.code,
                   error_message=exc.message, finished=timezone.now(),
                   processed=process(generation.content_type, text, prompt=generation.prompt)
                   if text else {})
        log.warning("generation %s failed: %s", generation.id, exc)
    except Exception as exc:  # never leave a page waiting forever
        log.exception("generation %s crashed", generation.id)
        await save(status=Status.FAILED, error_code="INTERNAL", error_message=str(exc)[:500],
                   finished=timezone.now())
        await bill(0, 0)
    else:
        price = outcome.cost_wei // outcome.tokens if outcome.tokens else 0
        await bill(price, outcome.tokens)
        # What the reader keeps has no line that repeats the template's instructions.
        text = clean_spec(content_type=generation.content_type, prompt=generation.prompt,
                          style=generation.style, length=generation.length,
                          followup=generation.is_followup).clean(outcome.text)
        await save(status=Status.CANCELLED if outcome.cancelled else Status.DONE,
                   text=text, seq=outcome.tokens, tokens=outcome.tokens,
                   host=outcome.host, job_id=outcome.job_id,
                   processed=process(generation.content_type, text,
                                     prompt=generation.prompt),
                   finished=timezone.now())
        kept = await Generation.objects.filter(pk=generation.id).afirst()
        if not outcome.cancelled and outcome.verified and kept is not None:
            await sync_to_async(cache_store)(kept)  # only a verified result is served again
    finally:
        await cache.adelete(live_key(generation.id))
        listener.cancel()
        await layer.group_discard(group, channel)
        await layer.group_send(group, {"type": "gen.end"})


_running: set[asyncio.Task] = set()


def generation_start(generation_id) -> asyncio.Task:
    """Run the generation as a task of this (ASGI) process, outside any consumer, so that
    closing the tab does not stop it. Must be called from the event loop."""
    # A fresh context: the request's own (its thread-sensitive executor among it) ends
    # with the response, and the job must outlive it.
    task = asyncio.get_running_loop().create_task(run_generation(generation_id),
                                                  context=contextvars.Context())
    _running.add(task)  # keep a reference: the loop holds tasks only weakly
    task.add_done_callback(_running.discard)
    return task
