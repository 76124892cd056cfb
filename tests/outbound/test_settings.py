"""OUTBOUND_ALLOWED_HOSTS: read strictly, empty unless someone sets it, loopback in
development and tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_hosts

ROOT = Path(__file__).resolve().parents[2]


def test_host_names_and_networks_are_read_and_normalised(monkeypatch):
    monkeypatch.setenv("OUTBOUND_ALLOWED_HOSTS", " Receiver.Internal. , 10.1.0.0/16,::1 ,")
    assert env_hosts("OUTBOUND_ALLOWED_HOSTS", []) == ["receiver.internal", "10.1.0.0/16",
                                                        "::1"]


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "http://localhost", "a b", "*.internal"])
def test_an_entry_that_is_neither_a_name_nor_a_network_fails_loudly(monkeypatch, entry):
    monkeypatch.setenv("OUTBOUND_ALLOWED_HOSTS", f"localhost,{entry}")
    with pytest.raises(ImproperlyConfigured, match="OUTBOUND_ALLOWED_HOSTS"):
        env_hosts("OUTBOUND_ALLOWED_HOSTS", [])


@pytest.mark.parametrize(("module", "expected"), [
    ("config.settings.base", "[]"),
    ("config.settings.dev", "['localhost', '127.0.0.0/8', '::1']"),
    ("config.settings.test", "['localhost', '127.0.0.0/8', '::1']"),
])
def test_only_development_and_tests_let_loopback_through(module, expected, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUTBOUND_ALLOWED_HOSTS"}
    env.update({"DJANGO_SETTINGS_MODULE": module, "SECRET_KEY": "x" * 60,
                "VAR_DIR": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import "
         "settings; print(settings.OUTBOUND_ALLOWED_HOSTS)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected
