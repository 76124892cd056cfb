import json
import logging

import pytest

from observability.logging import JsonFormatter, job_id_var, request_id_var

pytestmark = pytest.mark.django_db


def test_each_response_carries_a_request_id(client):
    response = client.get("/account/login/")
    assert len(response["X-Request-ID"]) == 32


def test_a_callers_request_id_is_kept(client):
    response = client.get("/account/login/", headers={"X-Request-ID": "trace-42"})
    assert response["X-Request-ID"] == "trace-42"


def test_a_request_is_logged_as_json_with_its_id(client, caplog):
    caplog.set_level(logging.INFO, logger="inkmarket.request")
    client.get("/account/login/", headers={"X-Request-ID": "trace-43"})
    (record,) = [r for r in caplog.records if r.name == "inkmarket.request"]
    token = request_id_var.set("trace-43")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "GET /account/login/ 200"
    assert line["status"] == 200
    assert line["request_id"] == "trace-43"


def test_a_log_line_inside_a_job_names_the_job():
    token = job_id_var.set("job-7")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "claimed", (), None)
        line = json.loads(JsonFormatter().format(record))
    finally:
        job_id_var.reset(token)
    assert line["job_id"] == "job-7"
    assert "request_id" not in line
