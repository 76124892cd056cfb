"""The client's settings for hostile hosts: read strictly, production's allow-list empty,
loopback in development and tests (where the local hosts run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
OURS = ("MARKETPLACE_ALLOWED_HOST_NETWORKS", "MARKETPLACE_STREAM_COMPRESSION",
        "MARKETPLACE_MAX_MESSAGE_BYTES", "MARKETPLACE_STREAM_ENCRYPTION",
        "MARKETPLACE_REQUIRE_TLS")


def settings_of(module: str, tmp_path, **environ: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    env.update({"DJANGO_SETTINGS_MODULE": module, "SECRET_KEY": "x" * 60,
                "VAR_DIR": str(tmp_path), **environ})
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import "
         "settings as s; print(s.MARKETPLACE_ALLOWED_HOST_NETWORKS, "
         "s.MARKETPLACE_STREAM_COMPRESSION, s.MARKETPLACE_MAX_MESSAGE_BYTES)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("module", "expected"), [
    ("config.settings.base", "[] None 65536"),
    ("config.settings.dev", "['localhost', '127.0.0.0/8', '::1'] None 65536"),
    ("config.settings.test", "['localhost', '127.0.0.0/8', '::1'] None 65536"),
])
def test_only_development_and_tests_let_hosts_on_loopback(module, expected, tmp_path):
    result = settings_of(module, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize(("name", "value"), [
    ("MARKETPLACE_ALLOWED_HOST_NETWORKS", "10.0.0.0/33"),
    ("MARKETPLACE_ALLOWED_HOST_NETWORKS", "*.internal"),
    ("MARKETPLACE_STREAM_COMPRESSION", "brotli"),
    ("MARKETPLACE_STREAM_COMPRESSION", "gzip"),  # needs encryption off: never compressed
    ("MARKETPLACE_STREAM_ENCRYPTION", "maybe"),
    ("MARKETPLACE_MAX_MESSAGE_BYTES", "64k"),
])
def test_a_bad_value_stops_start_up_naming_the_setting(name, value, tmp_path):
    result = settings_of("config.settings.base", tmp_path, **{name: value})
    assert result.returncode != 0
    assert name in result.stderr


def test_a_plaintext_stream_may_ask_for_gzip(tmp_path):
    result = settings_of("config.settings.base", tmp_path,
                         MARKETPLACE_STREAM_COMPRESSION="gzip",
                         MARKETPLACE_STREAM_ENCRYPTION="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[] gzip 65536"
