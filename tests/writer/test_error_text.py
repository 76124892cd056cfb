"""A generation that fails on the chain: its page, its WebSocket fragment and the writer's
API say the code, a fixed message and the reference to quote (the generation's id, which
the log names), never the failure's text: no RPC URL with its key, no exception class, no
stack detail."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from config.asgi import application
from marketplace.client.errors import public_message
from tests.conftest import LEAKS, RPC_SECRET
from writer import services
from writer.models import Generation, Status
from writer.runner import run_generation

pytestmark = pytest.mark.django_db(transaction=True)


def assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, leak


@pytest.fixture
async def failed(secret_rpc, alice, caplog) -> Generation:
    generation = await sync_to_async(services.generation_create)(
        user=alice, content_type="summary", style="casual", length="short",
        prompt="Rivers carry sediment to the sea.", price_cap_wei=10**9)
    await run_generation(generation.id)
    generation = await Generation.objects.aget(pk=generation.id)
    assert (generation.status, generation.error_code) == (Status.FAILED, "RPC_UNAVAILABLE")
    # The detail and the reference meet in the log.
    assert any(str(generation.id) in r.getMessage() and "RPC_UNAVAILABLE" in r.getMessage()
               for r in caplog.records)
    return generation


async def test_the_page_of_a_generation_failing_on_a_secret_rpc_url_shows_code_and_reference(
        failed, alice):
    client = AsyncClient()
    await sync_to_async(client.force_login)(alice)
    page = (await client.get(f"/g/{failed.id}/")).content.decode()
    assert "The generation failed (RPC_UNAVAILABLE)." in page
    assert public_message("RPC_UNAVAILABLE").capitalize() in page
    assert f"quote reference <code>{failed.id}</code>" in page
    assert_no_leak(page)
    assert RPC_SECRET not in failed.error_message  # nor in what operators see


async def test_the_websocket_fragment_of_that_generation_says_the_same(failed, alice):
    ws = WebsocketCommunicator(application, f"/ws/generation/{failed.id}/",
                               headers=[(b"origin", b"http://127.0.0.1")])
    ws.scope["user"] = alice
    connected, _ = await ws.connect()
    assert connected
    fragments = [await ws.receive_from(), await ws.receive_from()]
    await ws.disconnect()
    final = fragments[-1]
    assert 'id="result"' in final and "RPC_UNAVAILABLE" in final and str(failed.id) in final
    for fragment in fragments:
        assert_no_leak(fragment)


async def test_the_writer_api_gives_the_code_the_fixed_message_and_the_reference(failed,
                                                                                alice):
    client = AsyncClient()
    await sync_to_async(client.force_login)(alice)
    response = await client.get(f"/api/result/{failed.id}")
    assert response.json()["error"] == {"code": "RPC_UNAVAILABLE",
                                        "message": public_message("RPC_UNAVAILABLE"),
                                        "reference": str(failed.id)}
    assert_no_leak(response.content.decode())
    refused = await client.get("/api/result/not-a-uuid", headers={"X-Request-ID": "req-w-1"})
    assert refused.json()["error"]["request_id"] == "req-w-1"
