"""Holding a live server to its published OpenAPI schema with schemathesis (its command
line, in a process of its own, as a developer or CI would run it): requests made from the
schema, valid and invalid, through the examples, coverage, fuzzing and stateful phases,
every answer judged by every check. Used by tests/gateway/test_schema.py and
tests/writer/test_api_schema.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis
from django.conf import settings

from tests.conftest import ROOT

# Requests per operation in the fuzzing phase (the coverage phase adds its own: each
# boundary and each kind of invalid value once; the stateful phase its own scenarios).
MAX_EXAMPLES = 25
# The same requests every run, so a failure can be replayed; change it to explore more.
SEED = 1


def results_forget(pattern: str) -> None:
    """Drop cached results from this run's Redis database: the live server caches under no
    prefix of the test's own, and a result an earlier run cached would answer a request
    with a 200 where this run expects its own answer (the seed repeats the requests)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        for name in client.scan_iter(pattern):
            client.delete(name)
    finally:
        client.close()


def toml(value) -> str:
    return json.dumps(value)  # a JSON string or list is a TOML one


def config(*, auth: dict[str, dict[str, str]], server_errors: list[str] = (),
           parameters: dict[str, str] | None = None, hooks: str | None = None) -> str:
    """A schemathesis.toml: every check on; `auth` per security scheme of the schema;
    `server_errors` the 5xx statuses that are answers here, not bugs."""
    lines = [
        f"seed = {SEED}",
        "continue-on-failure = true",
        "workers = 1",
        "request-timeout = 30",
        f"generation.max-examples = {MAX_EXAMPLES}",
        "checks.enabled = true",
        "checks.not_a_server_error.expected-statuses = "
        + toml(["2xx", "3xx", "4xx", *server_errors]),
    ]
    if hooks:
        lines.append(f"hooks = {toml(hooks)}")
    if parameters:
        lines.append("[parameters]")
        lines += [f"{toml(name)} = {toml(value)}" for name, value in parameters.items()]
    for scheme, values in auth.items():
        lines.append(f"[auth.openapi.{scheme}]")
        lines += [f"{name} = {toml(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def schemathesis_run(*, schema_url: str, config: str, tmp_path: Path) -> str:
    """Run schemathesis on `schema_url`; its report when it found nothing, else an
    AssertionError with the report (each failure with a curl line to reproduce it)."""
    (tmp_path / "schemathesis.toml").write_text(config)
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file",
         str(tmp_path / "schemathesis.toml"), "run", schema_url, "--checks", "all",
         "--phases", "examples,coverage,fuzzing,stateful", "--report", "junit",
         "--report-dir", str(tmp_path / "report"), "--output-truncate", "false",
         "--no-color"],
        # In tmp_path: its example database and reports stay out of the work tree.
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-40000:] + run.stderr[-5000:]
    return run.stdout
