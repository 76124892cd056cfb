"""`manage.py generate` as a person or a script runs it: a subprocess against anvil, our
contracts and real host processes, with the embedded broker (no Redis). The text on
stdout, a one-line summary on stderr, no log below WARNING without -v, one JSON object
with --json, and an exit code that says what failed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from eth_account import Account

from content.prompts import build_prompt
from marketplace.chain.keystore import write_keystore
from marketplace.models import Job
from tests.conftest import ROOT
from tests.gateway.conftest import database_url, network_env
from writer.management.commands import generate

pytestmark = pytest.mark.django_db(transaction=True)

PRICE = 10**9
PROMPT = "the joy of reading on a train"
ARGS = ["--type", "summary", "--length", "short", "--max-tokens", "24", "--temperature", "0"]
SUMMARY = re.compile(r"^\d+ tokens from 0x[0-9a-fA-F]{40} in 1 attempt; "
                     r"cost (≈ )?[0-9.]+ ETH( \([\d,]+ wei\))?; "
                     r"TTFT [\d.]+ ms; quality [\d.]+( \(not verified\))?\n$")


def run(network, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url(), "REDIS_URL": "",  # the embedded broker
            "LOG_LEVEL": "INFO", "LOG_FORMAT": "json", **network_env(network), **(env or {})}
    return subprocess.run([sys.executable, "manage.py", "generate", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=300)


def log_levels(stderr: str) -> set[str]:
    levels = set()
    for line in stderr.splitlines():
        if line.startswith("{"):
            levels.add(json.loads(line)["level"])
    return levels


def test_it_prints_the_text_on_stdout_and_one_summary_line_on_stderr(network):
    network.start_hosts({"host-1": PRICE})

    done = run(network, PROMPT, *ARGS)

    assert done.returncode == generate.OK, done.stderr
    job = Job.objects.get()
    spec = build_prompt("summary", PROMPT, style="professional", length="short")
    assert done.stdout == spec.clean(job.text).rstrip("\n") + "\n"
    assert done.stdout.strip()
    assert SUMMARY.match(done.stderr), done.stderr  # nothing else: no log, no warning
    assert "No hostname" not in done.stderr


def test_v_brings_the_info_logs_back_on_stderr_only(network):
    network.start_hosts({"host-1": PRICE})

    done = run(network, PROMPT, *ARGS, "-v")

    assert done.returncode == generate.OK, done.stderr
    assert "INFO" in log_levels(done.stderr)
    assert not any(line.startswith("{") for line in done.stdout.splitlines())
    assert "No hostname" not in done.stderr


def test_json_prints_the_outcome_as_one_object_and_nothing_else(network):
    (host,) = network.start_hosts({"host-1": PRICE})

    done = run(network, PROMPT, *ARGS, "--json")

    assert done.returncode == generate.OK, done.stderr
    (line,) = done.stdout.splitlines()
    outcome = json.loads(line)
    job = Job.objects.get()
    assert outcome["ok"] is True and outcome["job_id"] == str(job.id)
    assert outcome["host"] == host.address and outcome["tokens"] == job.tokens
    assert outcome["text"].strip() and int(outcome["cost_wei"]) > 0
    assert outcome["attempts"] == 1 and outcome["tx_hashes"]
    assert done.stderr == ""


@pytest.mark.parametrize("as_json", [False, True])
def test_no_host_exits_3(network, as_json):
    done = run(network, PROMPT, *ARGS, *(["--json"] if as_json else []))

    assert done.returncode == generate.NO_HOSTS == 3
    if as_json:
        assert json.loads(done.stdout) == {
            "ok": False, "exit_code": 3, "error": {
                "code": "NO_HOSTS_AVAILABLE", "message": json.loads(done.stdout)["error"][
                    "message"]}}
        assert done.stderr == ""
    else:
        assert done.stdout == ""
        assert done.stderr.startswith("error: NO_HOSTS_AVAILABLE: "), done.stderr
        assert len(done.stderr.splitlines()) == 1


def test_a_platform_wallet_without_funds_exits_4(network, tmp_path):
    network.start_hosts({"host-1": PRICE})
    passphrase = tmp_path / "empty.pass"
    passphrase.write_text("empty wallet")
    keystore = tmp_path / "empty.json"
    write_keystore(keystore, Account.create().key, "empty wallet", kdf_iterations=2)

    done = run(network, PROMPT, *ARGS, "--json",
               env={"WALLET_KEYSTORE_FILE": str(keystore),
                    "WALLET_PASSPHRASE_FILE": str(passphrase)})

    assert done.returncode == generate.INSUFFICIENT_FUNDS == 4, done.stdout + done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "INSUFFICIENT_FUNDS"


def test_when_every_host_fails_it_exits_5(network):
    network.start_hosts({"host-1": PRICE}, args={"host-1": ["--behaviour", "malformed"]})

    done = run(network, PROMPT, *ARGS)

    assert done.returncode == generate.ALL_HOSTS_FAILED == 5, done.stderr
    assert done.stdout == ""
    # The host's failure is a warning, so it shows; the last line says why it gave up.
    assert done.stderr.splitlines()[-1].startswith("error: HOST_MALFORMED: ")
    assert log_levels(done.stderr) <= {"WARNING", "ERROR"}


@pytest.mark.parametrize("args", [["   "], [PROMPT, "--temperature", "3"]])
def test_bad_arguments_exit_2_before_anything_is_sent(network, args):
    done = run(network, *args)

    assert done.returncode == generate.USAGE == 2
    assert done.stdout == ""
    assert not Job.objects.exists()
