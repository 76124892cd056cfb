import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from config.asgi import application
from writer.models import Generation
from writer.runner import group_name

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def make_generation(user, text="", seq=0, status="streaming"):
    return Generation.objects.create(
        user=user, content_type="summary", style="casual", length="short", prompt="p",
        full_prompt="p", model="m", max_tokens=10, temperature=0.1, cache_key="k",
        text=text, seq=seq, status=status)


async def connect(user, generation):
    communicator = WebsocketCommunicator(application, f"/ws/generation/{generation.id}/",
                                         headers=[(b"origin", b"http://127.0.0.1")])
    communicator.scope["user"] = user
    return communicator


async def test_tokens_arrive_in_order_escaped_with_progress(alice):
    generation = await make_generation(alice)
    ws = await connect(alice, generation)
    ws.scope["user"] = alice
    connected, _ = await ws.connect()
    assert connected
    first = await ws.receive_from()
    assert 'id="output" hx-swap-oob="innerHTML"' in first
    layer = get_channel_layer()
    for index, text in enumerate(["Hello", " <b>world</b>", "!"]):
        await layer.group_send(group_name(generation.id),
                               {"type": "gen.token", "index": index, "text": text, "max": 10})
    received = [await ws.receive_from() for _ in range(3)]
    assert "<span>Hello</span>" in received[0]
    assert "<span> &lt;b&gt;world&lt;/b&gt;</span>" in received[1]
    assert "<b>" not in received[1]
    assert "<span>!</span>" in received[2]
    assert "3 of 10 tokens" in received[2]
    await ws.disconnect()


async def test_another_user_cannot_join_someone_elses_stream(alice, bob):
    generation = await make_generation(alice)
    ws = await connect(bob, generation)
    connected, code = await ws.connect()
    assert not connected
    assert code == 4404


async def test_an_anonymous_visitor_cannot_join(alice):
    from django.contrib.auth.models import AnonymousUser

    generation = await make_generation(alice)
    ws = await connect(AnonymousUser(), generation)
    connected, code = await ws.connect()
    assert not connected
    assert code == 4401


async def test_a_reconnect_shows_the_text_so_far_and_a_gap_resends_it(alice):
    generation = await make_generation(alice, text="Already here", seq=2)
    ws = await connect(alice, generation)
    await ws.connect()
    first = await ws.receive_from()
    assert "Already here" in first
    assert "2 of 10 tokens" in first
    # Token 5 arrives though 2..4 were lost: the page gets the whole text again.
    await Generation.objects.filter(pk=generation.id).aupdate(text="Already here and more",
                                                              seq=6)
    await get_channel_layer().group_send(group_name(generation.id),
                                         {"type": "gen.token", "index": 5, "text": "x",
                                          "max": 10})
    again = await ws.receive_from()
    assert "Already here and more" in again
    await ws.disconnect()


async def test_stop_reaches_the_jobs_group(alice):
    generation = await make_generation(alice)
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(group_name(generation.id), listener)
    ws = await connect(alice, generation)
    await ws.connect()
    await ws.receive_from()
    await ws.send_to(text_data='{"action": "stop", "HEADERS": {}}')
    message = await layer.receive(listener)
    assert message["type"] == "gen.cancel"
    assert "Stopping" in await ws.receive_from()
    await ws.disconnect()


async def test_the_end_sends_the_whole_text_then_the_shaped_result_escaped(alice):
    generation = await make_generation(alice, text="- <b>one</b>\n- two", seq=4)
    ws = await connect(alice, generation)
    await ws.connect()
    await ws.receive_from()
    await Generation.objects.filter(pk=generation.id).aupdate(
        status="done", tokens=4, processed={"points": ["<b>one</b>", "two"]})
    await get_channel_layer().group_send(group_name(generation.id), {"type": "gen.end"})
    state = await ws.receive_from()
    assert "&lt;b&gt;one&lt;/b&gt;" in state and "<b>" not in state
    assert '<span id="stop-form" hx-swap-oob="outerHTML"></span>' in state
    final = await ws.receive_from()
    assert final.startswith('<section id="result" hx-swap-oob="outerHTML"')
    assert "<li>&lt;b&gt;one&lt;/b&gt;</li>" in final and "<b>" not in final
    assert 'id="edit-text"' in final and 'hx-boost="true"' in final
    await ws.disconnect()


async def test_a_finished_generation_sends_its_result_on_connect(alice):
    generation = await make_generation(alice, text="Done text.", seq=2, status="done")
    ws = await connect(alice, generation)
    await ws.connect()
    assert "Done text." in await ws.receive_from()
    assert 'id="result"' in await ws.receive_from()
    await ws.disconnect()


async def test_tokens_already_shown_are_not_repeated(alice):
    generation = await make_generation(alice, text="ab", seq=2)
    ws = await connect(alice, generation)
    await ws.connect()
    await ws.receive_from()
    layer = get_channel_layer()
    for index, text in ((1, "b"), (2, "c")):
        await layer.group_send(group_name(generation.id),
                               {"type": "gen.token", "index": index, "text": text, "max": 10})
    fragment = await ws.receive_from()
    assert "<span>c</span>" in fragment and "3 of 10 tokens" in fragment
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()
