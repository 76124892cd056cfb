"""The follow-up form on a piece's page: what it offers, what it refuses, and the versions
of a document it lists. (The follow-ups that run: test_conversation_flow.)"""

import pytest

from writer import selectors, services
from writer.models import Generation
from writer.services import FollowupRefused

pytestmark = pytest.mark.django_db


def make(user, **kwargs):
    fields = {"content_type": "email", "style": "casual", "length": "short",
              "prompt": "the office move", "full_prompt": "Write an email about the move.",
              "model": "m", "max_tokens": 10, "temperature": 0.5, "cache_key": "k",
              "status": "done", "text": "Subject: Move\n\nWe move on Monday."}
    fields.update(kwargs)
    return Generation.objects.create(user=user, **fields)


def test_a_finished_piece_offers_its_types_changes_a_box_and_the_cost_first(alice_client,
                                                                             alice):
    page = alice_client.get(f"/g/{make(alice).id}/").content.decode()
    assert "Ask for a change" in page
    for label in ("Shorter", "More formal", "Friendlier", "Clear next step"):
        assert f">{label}</button>" in page
    assert 'name="preset" value="shorter"' in page and 'name="preset" value="formal"' in page
    assert 'name="instruction"' in page
    assert 'id="followup-estimate" hx-get="/estimate"' in page  # the cost before sending
    assert "Versions" not in page  # one version: no list


def test_a_live_or_empty_piece_offers_no_change(alice_client, alice):
    live = make(alice, status="streaming", text="")
    assert "Ask for a change" not in alice_client.get(f"/g/{live.id}/").content.decode()
    failed = make(alice, status="failed", text="", error_code="INTERNAL")
    assert "Ask for a change" not in alice_client.get(f"/g/{failed.id}/").content.decode()


@pytest.mark.parametrize("data, message", [
    ({}, "Write the change you want, or pick one of the buttons."),
    ({"instruction": "   "}, "Write the change you want, or pick one of the buttons."),
    ({"instruction": "x" * 501}, "Keep the change under 500 characters (it has 501)."),
    ({"preset": "tests"}, "That change is not offered for this piece."),  # code's, not email's
])
def test_an_empty_too_long_or_unknown_change_is_a_form_error(alice_client, alice, data,
                                                             message):
    piece = make(alice)
    response = alice_client.post(f"/g/{piece.id}/followup", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert Generation.objects.count() == 1


def test_a_change_of_someone_elses_piece_is_not_found(alice_client, bob):
    piece = make(bob)
    assert alice_client.post(f"/g/{piece.id}/followup", {"preset": "shorter"}) \
        .status_code == 404
    assert Generation.objects.count() == 1


def test_a_change_of_a_piece_still_being_written_is_refused_plainly(alice_client, alice):
    live = make(alice, status="streaming", text="We move")
    response = alice_client.post(f"/g/{live.id}/followup", {"preset": "shorter"})
    assert response.status_code == 409
    assert "This version is still being written: wait for it to finish" \
        in response.content.decode()
    assert Generation.objects.count() == 1
    with pytest.raises(FollowupRefused) as info:  # the service refuses it too, under lock
        services.generation_followup(user=alice, parent=live, instruction="Shorter.",
                                     price_cap_wei=10**9)
    assert info.value.code == "STILL_WRITING"


def test_the_versions_are_listed_and_an_earlier_one_can_be_changed_again(alice_client,
                                                                        alice):
    first = make(alice)
    second = make(alice, root=first, parent=first, instruction="Shorter.", text="Move Monday.")
    third = make(alice, root=first, parent=second, instruction="More formal.",
                 text="We relocate on Monday.")
    branch = make(alice, root=first, parent=first, instruction="Friendlier.",
                  text="Hi all! We move Monday.")
    page = alice_client.get(f"/g/{third.id}/").content.decode()
    assert "Versions" in page and "Change asked:</span> More formal." in page
    start = page.index('class="versions"')
    listed = page[start:page.index("</nav>", start)]
    at = [listed.index(s) for s in ("Original", "Shorter.", "More formal.", "Friendlier.")]
    assert at == sorted(at)
    assert "a change of version 1" in page  # the branch names the version it changed
    # The branch's conversation leaves out the versions after the one it changed.
    assert [v.id for v in selectors.generation_conversation(generation=branch)] == \
        [first.id, branch.id]
    assert [v.id for v in selectors.generation_conversation(generation=third)] == \
        [first.id, second.id, third.id]


def test_deleting_a_version_deletes_the_changes_made_from_it_only(alice_client, alice):
    first = make(alice)
    second = make(alice, root=first, parent=first, instruction="Shorter.")
    third = make(alice, root=first, parent=second, instruction="More formal.")
    other = make(alice, root=first, parent=first, instruction="Friendlier.")
    assert alice_client.post(f"/g/{second.id}/delete").status_code == 302
    assert set(Generation.objects.values_list("id", flat=True)) == {first.id, other.id}
    assert third.id not in set(Generation.objects.values_list("id", flat=True))


@pytest.mark.django_db(transaction=True)
async def test_the_end_of_a_stream_brings_the_change_form_with_a_token_django_accepts(alice):
    """The consumer renders the finished part without a request: the form's token is the
    page's CSRF cookie, which Django takes as a token too."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.middleware.csrf import _get_new_csrf_string
    from django.test import AsyncClient

    from config.asgi import application

    piece = await sync_to_async(make)(alice)
    secret = _get_new_csrf_string()
    ws = WebsocketCommunicator(application, f"/ws/generation/{piece.id}/",
                               headers=[(b"origin", b"http://127.0.0.1"),
                                        (b"cookie", f"csrftoken={secret}".encode())])
    ws.scope["user"] = alice
    await ws.connect()
    await ws.receive_from()
    final = await ws.receive_from()
    await ws.disconnect()
    assert 'id="result"' in final and "Ask for a change" in final
    assert f'name="csrfmiddlewaretoken" value="{secret}"' in final

    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(alice)
    client.cookies["csrftoken"] = secret
    refused = await client.post(f"/g/{piece.id}/followup", {"instruction": ""})
    assert refused.status_code == 403  # no token: CSRF refuses it
    answered = await client.post(f"/g/{piece.id}/followup",
                                 {"instruction": "", "csrfmiddlewaretoken": secret})
    assert answered.status_code == 400  # past CSRF, to the form's own error
    assert "Write the change you want" in answered.content.decode()


def test_the_history_marks_a_follow_up_with_the_change_it_asked(alice_client, alice):
    first = make(alice)
    make(alice, root=first, parent=first, instruction="Shorter, <please>.")
    page = alice_client.get("/history/").content.decode()
    assert page.count("the office move") == 2
    assert "Change: Shorter, &lt;please&gt;." in page
    found = alice_client.get("/history/?q=please").content.decode()
    assert found.count("the office move") == 1  # the change is searched too
