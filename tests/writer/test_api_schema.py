"""The published schema of the writer's /api is exact: schemathesis reads /api/openapi.json
from a live server (uvicorn on config.asgi, the test database) and sends it requests made
from that schema, valid and invalid, as a user who logged in through the login page: the
session cookie, and the CSRF cookie and header a POST needs. Each answer must be a status
the schema names, with a body of the schema's shape; a valid request must be accepted and
an invalid one refused; a request without the session must be a 401.

No host is on the marketplace (a real chain with our contracts, where no host has
registered): a valid generation is answered 503 NO_HOSTS_AVAILABLE, which the schema
names; any other 5xx fails."""

from __future__ import annotations

import json

import httpx
import pytest
from django.test import Client

from tests.apischema import config, results_forget, schemathesis_run
from tests.gateway.conftest import Servers, network_env
from writer.models import Generation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_results():
    results_forget("*writer:result:*")
    yield
    results_forget("*writer:result:*")


@pytest.fixture
def servers(tmp_path):
    made = Servers(tmp_path)
    yield made
    made.stop()


def log_in(url: str, *, username: str, password: str) -> dict[str, str]:
    """Log in through the login form, as a browser does; the cookies it ends with."""
    with httpx.Client(base_url=url) as browser:
        browser.get("/account/login/").raise_for_status()
        answer = browser.post("/account/login/", data={
            "username": username, "password": password,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"]})
        assert answer.status_code == 302, answer.text  # to the home page: logged in
        return dict(browser.cookies)


def test_every_answer_of_the_writer_api_is_one_its_schema_names(network, servers, alice,
                                                                tmp_path):
    url = servers.start(network_env(network))
    cookies = log_in(url, username="alice", password="a-long-password-1")

    report = schemathesis_run(
        schema_url=f"{url}/api/openapi.json", tmp_path=tmp_path, config=config(
            auth={"SessionAuth": {"api_key": cookies["sessionid"]}},
            parameters={"cookie.csrftoken": cookies["csrftoken"],
                        "header.X-CSRFToken": cookies["csrftoken"]},
            server_errors=["503"]))

    assert "Operations:       4 selected / 4 total" in report


# ---- What the run above relies on, one by one ---------------------------------------


def test_a_post_names_the_csrf_cookie_and_header_it_needs(alice_client):
    published = alice_client.get("/api/openapi.json").json()

    generate = published["paths"]["/api/generate"]["post"]
    assert generate["security"] == [{"SessionAuth": []}]
    assert {(p["in"], p["name"], p["required"]) for p in generate["parameters"]} == {
        ("cookie", "csrftoken", True), ("header", "X-CSRFToken", True)}
    assert {"400", "401", "402", "403", "413", "500", "503"} == set(generate["responses"]) - {
        "200"}


@pytest.mark.parametrize(("path", "body"), [
    ("/api/generate", '{"type": "blog", "prompt": "a\\u0000b"}'),
    ("/api/generate", '{"type": "blog", "prompt": "a\\ud800b"}'),
])
def test_a_nul_or_an_unpaired_surrogate_in_the_prompt_is_a_400_not_a_500(alice_client, path,
                                                                          body):
    response = alice_client.post(path, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
    assert not Generation.objects.exists()


def test_a_nul_in_the_search_and_a_limit_out_of_range_are_400s(alice_client):
    for query in ("q=%00", "limit=0", "limit=201"):
        response = alice_client.get(f"/api/history?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"]["code"] == "INVALID_REQUEST", query
    assert alice_client.get("/api/history?limit=200").status_code == 200


def test_a_multipart_body_without_a_boundary_is_a_400_not_a_500(alice):
    client = Client(enforce_csrf_checks=True)  # the CSRF check reads the form
    client.get("/account/login/")  # the CSRF cookie
    client.force_login(alice)

    response = client.post("/api/generate", b"--x--", content_type="multipart/form-data",
                           headers={"X-CSRFToken": client.cookies["csrftoken"].value})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_REQUEST"


def test_a_body_over_djangos_limit_is_a_413_in_the_one_shape(alice_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"type": "blog", "prompt": "x" * 2000})

    response = alice_client.post("/api/generate", body, content_type="application/json")

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
