import json

import pytest

from writer.models import Generation

pytestmark = pytest.mark.django_db


def test_the_api_needs_a_session(client):
    response = client.get("/api/history")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


def test_someone_elses_job_is_a_404(alice_client, bob):
    generation = Generation.objects.create(
        user=bob, content_type="blog", style="casual", length="short", prompt="p",
        full_prompt="p", model="m", max_tokens=10, temperature=0.5, cache_key="k")
    response = alice_client.get(f"/api/result/{generation.id}")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "NOT_FOUND", "message": "no such job",
                                         "request_id": response["X-Request-ID"]}}


def test_an_own_job_shows_status_progress_and_result(alice_client, alice):
    generation = Generation.objects.create(
        user=alice, content_type="summary", style="casual", length="short", prompt="p",
        full_prompt="p", model="m", max_tokens=10, temperature=0.5, cache_key="k",
        status="streaming", text="half", seq=5)
    body = alice_client.get(f"/api/result/{generation.id}").json()
    assert (body["status"], body["progress"], body["result"]) == ("streaming", 0.5, "half")


@pytest.mark.parametrize("payload, fragment", [
    ({"type": "poem", "prompt": "x"}, "type"),
    ({"type": "blog", "prompt": "x", "length": "epic"}, "length"),
    ({"type": "blog"}, "prompt"),
])
def test_validation_errors_have_one_shape(alice_client, payload, fragment):
    response = alice_client.post("/api/generate", json.dumps(payload),
                                 content_type="application/json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert fragment in error["message"]
    assert Generation.objects.count() == 0


def test_an_empty_prompt_is_refused(alice_client):
    response = alice_client.post("/api/generate", json.dumps({"type": "blog", "prompt": "  "}),
                                 content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "the prompt is empty"


def test_history_lists_only_your_own(alice_client, alice, bob):
    for user, prompt in ((alice, "mine"), (bob, "theirs")):
        Generation.objects.create(user=user, content_type="blog", style="casual",
                                  length="short", prompt=prompt, full_prompt=prompt, model="m",
                                  max_tokens=10, temperature=0.5, cache_key="k")
    assert [item["prompt"] for item in alice_client.get("/api/history").json()] == ["mine"]


def test_the_openapi_docs_are_served(alice_client):
    assert alice_client.get("/api/openapi.json").json()["info"]["title"] == (
        "Inkmarket writer API")


def test_an_over_long_prompt_is_refused_and_nothing_is_created(alice_client):
    response = alice_client.post("/api/generate",
                                 json.dumps({"type": "blog", "prompt": "x" * 4001}),
                                 content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "INVALID_REQUEST",
                                         "message": "the prompt is over 4000 characters",
                                         "request_id": response["X-Request-ID"]}}
    assert Generation.objects.count() == 0


def test_without_hosts_generate_is_a_503_and_nothing_is_created(alice_client, settings):
    settings.CHAIN_RPC = "http://127.0.0.1:9"  # nothing listens there
    response = alice_client.post("/api/generate",
                                 json.dumps({"type": "summary", "prompt": "Owls."}),
                                 content_type="application/json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "NO_HOSTS_AVAILABLE"
    assert Generation.objects.count() == 0


def test_the_estimate_says_when_no_host_serves_the_model(alice_client, settings):
    settings.CHAIN_RPC = "http://127.0.0.1:9"
    body = alice_client.get("/api/estimate?type=code&length=long").json()
    assert body == {"model": "smollm2-135m-instruct", "maxTokens": 1024, "nodes": 0,
                    "cost": None, "estimatedTime": None}


def test_history_searches_results_and_filters_by_type(alice_client, alice):
    for prompt, kind, text in (("a", "blog", "about owls"), ("b", "email", "about bats")):
        Generation.objects.create(user=alice, content_type=kind, style="casual",
                                  length="short", prompt=prompt, full_prompt=prompt, model="m",
                                  max_tokens=10, temperature=0.5, cache_key="k", text=text)
    assert [i["prompt"] for i in alice_client.get("/api/history?q=owls").json()] == ["a"]
    assert [i["prompt"] for i in alice_client.get("/api/history?type=email").json()] == ["b"]


def test_a_post_without_the_csrf_token_is_refused(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/api/generate", json.dumps({"type": "blog", "prompt": "x"}),
                           content_type="application/json")
    assert response.status_code == 403
    assert response.json() == {"error": {"code": "FORBIDDEN", "message": "CSRF check Failed",
                                         "request_id": response["X-Request-ID"]}}
    assert Generation.objects.count() == 0
