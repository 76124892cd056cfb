"""POST /v1/batch and GET /v1/batch/{id}: what is accepted, what is refused and why, and
who may read a batch."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.models import Reservation
from accounts.services import api_key_create
from gateway.batch import batch_item_claim
from gateway.models import Batch, BatchItem, ItemState
from tests.conftest import MODEL
from tests.gateway.batchkit import nonce, purge_broker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_queued_tasks():
    """Nothing here runs the items; what was queued is dropped so no worker test of a
    later module picks it up."""
    yield
    purge_broker()


def requests(count: int, **fields) -> list[dict]:
    tag = nonce()
    return [{"model": MODEL, "prompt": f"Name a colour ({tag} {i}).", "max_tokens": 8,
             **fields} for i in range(count)]


async def post(key, body: dict):
    return await AsyncClient().post("/v1/batch", data=body, content_type="application/json",
                                    headers=key.headers)


def error(response) -> dict:
    assert response["Content-Type"].startswith("application/json")
    return response.json()["error"]


async def test_a_batch_is_accepted_with_its_id_state_and_counts_and_its_items_queued(alice):
    response = await post(alice, {"requests": requests(3)})

    assert response.status_code == 202
    body = response.json()
    assert body["state"] == "queued"
    assert body["counts"] == {"total": 3, "queued": 3, "running": 0, "succeeded": 0,
                              "failed": 0}
    assert body["webhook_url"] is None and body["webhook_secret"] is None
    items = [i async for i in BatchItem.objects.filter(batch_id=body["id"]).order_by("index")]
    assert [(i.index, i.state, i.params) for i in items] == [
        (n, ItemState.QUEUED, {"max_tokens": 8, "temperature": 0.7}) for n in range(3)]
    batch = await Batch.objects.aget(pk=body["id"])
    assert batch.owner_id == alice.user.pk and batch.api_key_id == alice.key.pk

    status = await AsyncClient().get(f"/v1/batch/{body['id']}", headers=alice.headers)
    assert status.status_code == 200
    read = status.json()
    assert read["state"] == "queued" and read["counts"] == body["counts"]
    assert [(i["index"], i["state"], i["text"], i["error"]) for i in read["items"]] == [
        (n, "queued", None, None) for n in range(3)]


async def test_a_hundred_requests_are_accepted_and_a_hundred_and_one_are_a_400(alice):
    assert (await post(alice, {"requests": requests(100)})).status_code == 202

    response = await post(alice, {"requests": requests(101)})

    assert response.status_code == 400
    assert error(response)["code"] == "BATCH_TOO_LARGE"
    assert error(response)["limit"] == 100 and error(response)["count"] == 101
    assert "at most 100" in error(response)["message"]
    assert await Batch.objects.acount() == 1


@pytest.mark.parametrize(("field", "value", "code"), [
    ("model", "no-such-model", "UNKNOWN_MODEL"),
    ("temperature", 2.5, "INVALID_TEMPERATURE"),
    ("max_tokens", 0, "INVALID_MAX_TOKENS"),
    ("prompt", "   ", "INVALID_REQUEST"),
    ("prompt", "x" * 16_001, "PROMPT_TOO_LONG"),
])
async def test_one_invalid_request_refuses_the_whole_batch_naming_it(alice, field, value,
                                                                    code):
    body = requests(3)
    body[1][field] = value

    response = await post(alice, {"requests": body})

    assert response.status_code == 400
    assert error(response)["code"] == code
    assert error(response)["index"] == 1
    assert error(response)["message"].startswith("requests[1]: ")
    assert not await Batch.objects.aexists()  # nothing written, nothing queued


async def test_an_empty_batch_a_bad_webhook_url_and_a_malformed_body_are_400s(alice):
    empty = await post(alice, {"requests": []})
    assert (empty.status_code, error(empty)["code"]) == (400, "BATCH_EMPTY")
    bad_url = await post(alice, {"requests": requests(1), "webhook_url": "ftp://example"})
    assert (bad_url.status_code, error(bad_url)["code"]) == (400, "INVALID_WEBHOOK_URL")
    malformed = await post(alice, {"requests": [{"model": MODEL}]})
    assert (malformed.status_code, error(malformed)["code"]) == (400, "INVALID_REQUEST")
    assert "prompt" in error(malformed)["message"]
    assert not await Batch.objects.aexists()


async def test_a_webhook_secret_is_made_and_shown_once_unless_one_is_given(alice):
    made = (await post(alice, {"requests": requests(1),
                               "webhook_url": "http://127.0.0.1:9/hook"})).json()
    assert made["webhook_url"] == "http://127.0.0.1:9/hook"
    assert made["webhook_secret"].startswith("whsec_") and len(made["webhook_secret"]) == 70
    given = (await post(alice, {"requests": requests(1), "webhook_url": "https://localhost/h",
                                "webhook_secret": "my-own-secret"})).json()
    assert given["webhook_secret"] == "my-own-secret"
    read = (await AsyncClient().get(f"/v1/batch/{made['id']}", headers=alice.headers)).json()
    assert "webhook_secret" not in read


async def test_another_users_batch_and_a_batch_that_does_not_exist_are_both_404(alice, bob):
    made = (await post(alice, {"requests": requests(1)})).json()

    for batch_id in (made["id"], "00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        response = await AsyncClient().get(f"/v1/batch/{batch_id}", headers=bob.headers)
        assert response.status_code == 404, batch_id
        assert error(response)["code"] == "NOT_FOUND"
    assert (await AsyncClient().get(f"/v1/batch/{made['id']}",
                                    headers=alice.headers)).status_code == 200


async def test_batches_need_a_key_with_the_batch_scope(alice):
    response = await AsyncClient().post("/v1/batch", data={"requests": requests(1)},
                                        content_type="application/json")
    assert (response.status_code, error(response)["code"]) == (401, "UNAUTHENTICATED")
    made = await sync_to_async(api_key_create)(user=alice.user, name="inference only",
                                               scopes=["inference"])
    headers = {"X-API-Key": made.raw}
    response = await AsyncClient().post("/v1/batch", data={"requests": requests(1)},
                                        content_type="application/json", headers=headers)
    assert (response.status_code, error(response)["code"]) == (403, "FORBIDDEN")
    assert "batch" in error(response)["message"]
    assert not await Batch.objects.aexists()
    batch = (await post(alice, {"requests": requests(1)})).json()
    response = await AsyncClient().get(f"/v1/batch/{batch['id']}", headers=headers)
    assert response.status_code == 403


async def test_a_batch_is_cancelled_its_queued_requests_failing_uncharged(alice, bob):
    body = (await post(alice, {"requests": requests(3)})).json()
    cancel = f"/v1/batch/{body['id']}/cancel"
    assert (await AsyncClient().post(cancel, headers=bob.headers)).status_code == 404

    response = await AsyncClient().post(cancel, headers=alice.headers)
    assert response.status_code == 200, response.content
    read = response.json()
    assert read["state"] == "cancelled" and read["finished_at"]
    assert read["counts"] == {"total": 3, "queued": 0, "running": 0, "succeeded": 0,
                              "failed": 3}
    assert {i["error"]["code"] for i in read["items"]} == {"CANCELLED"}
    assert read["cost"] == "0"
    assert not await Reservation.objects.aexists()  # nothing was held, nothing is charged

    again = await AsyncClient().post(cancel, headers=alice.headers)
    assert again.status_code == 200 and again.json()["counts"] == read["counts"]
    # A worker that picks up a cancelled item finds nothing to run.
    item = await BatchItem.objects.filter(batch_id=body["id"]).afirst()
    assert await sync_to_async(batch_item_claim)(item_id=item.pk) is None


async def test_a_completed_batch_cannot_be_cancelled(alice):
    body = (await post(alice, {"requests": requests(1)})).json()
    await Batch.objects.filter(pk=body["id"]).aupdate(state="completed")
    response = await AsyncClient().post(f"/v1/batch/{body['id']}/cancel",
                                        headers=alice.headers)
    assert response.status_code == 409 and error(response)["code"] == "BATCH_FINISHED"
