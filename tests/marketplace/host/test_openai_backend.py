"""The OpenAI-compatible backend against a real server we did not write: llama-cpp-python's
own OpenAI-compatible server, running the same bundled model."""

import asyncio
import threading

from marketplace.host.backends import OpenAICompatibleBackend
from tests.marketplace.host.conftest import post_for, request_for, start_host, stored_text
from tests.marketplace.host.test_streaming import collect


def test_the_backend_streams_tokens_from_the_server(llama_server, llama):
    backend = OpenAICompatibleBackend(llama_server, model_id="smollm2-135m-instruct")
    request = request_for("Name the capital of France.", max_tokens=16)
    try:
        pieces = list(backend.stream(request, threading.Event()))
    finally:
        backend.close()
    assert len(pieces) > 1
    assert "Paris" in "".join(pieces)
    direct = "".join(llama.stream(request, threading.Event()))
    assert "Paris" in direct


def test_a_cancelled_request_stops_early(llama_server):
    backend = OpenAICompatibleBackend(llama_server, model_id="smollm2-135m-instruct")
    cancel = threading.Event()
    pieces = []
    try:
        for piece in backend.stream(request_for("Tell a long story.", max_tokens=200), cancel):
            pieces.append(piece)
            if len(pieces) == 3:
                cancel.set()
    finally:
        backend.close()
    assert len(pieces) == 3


async def test_a_host_on_the_openai_backend_serves_a_marketplace_job(
        on_anvil, llama_server, tmp_path):
    backend = OpenAICompatibleBackend(llama_server, model_id="smollm2-135m-instruct")
    host = await start_host(on_anvil, backend, role="host-2", tmp_path=tmp_path)
    try:
        client = on_anvil.chain("platform")
        request = request_for("Say something kind.", max_tokens=12)
        posted = await post_for(client, host.address, request)
        pieces, end = await collect(host, client, posted, request)
        assert pieces
        assert stored_text(host, end.cid, request, posted.job_id) == "".join(pieces)
        for _ in range(100):
            if await client.submitted_result(posted.job_id):
                break
            await asyncio.sleep(0.05)
        assert (await client.submitted_result(posted.job_id)).tokens_used == len(pieces)
    finally:
        await host.runner.cleanup()
        backend.close()
