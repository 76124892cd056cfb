"""A whole local network: anvil, our contracts, and real host processes (`runhost`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from marketplace import wallet
from marketplace.client import discovery
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]
MODEL = "smollm2-135m-instruct"


class HostProcess:
    def __init__(self, role, price, proc, url, address):
        self.role, self.price, self.proc, self.url, self.address = (role, price, proc, url,
                                                                     address)

    def kill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class Network:
    def __init__(self, on_anvil, tmp_path):
        self.anvil = on_anvil
        self.tmp = tmp_path
        self.deployment_file = tmp_path / "deployments" / "31337.json"
        self.deployment_file.parent.mkdir(parents=True, exist_ok=True)
        self.deployment_file.write_text(on_anvil.deployment.to_json())
        self.hosts: list[HostProcess] = []

    def start_hosts(self, prices: dict[str, int]) -> list[HostProcess]:
        started = []
        for role, price in prices.items():
            port = free_port()
            key = self.anvil.keys[role]
            with open(self.tmp / f"{role}.log", "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "manage.py", "runhost", "--port", str(port), "--price",
                     str(price), "--keystore", str(key.keystore), "--passphrase-file",
                     str(key.passphrase_file), "--rpc-url", self.anvil.url, "--deployment",
                     str(self.deployment_file), "--results-dir", str(self.tmp / role)],
                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"})
            started.append(HostProcess(role, price, proc, f"http://127.0.0.1:{port}",
                                       key.address))
        for host in started:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"{host.url}/health", timeout=1).close()
                    break
                except OSError:
                    if host.proc.poll() is not None:
                        raise RuntimeError((self.tmp / f"{host.role}.log").read_text()) from None
                    time.sleep(0.1)
        self.hosts += started
        return started

    def stop(self):
        for host in self.hosts:
            if host.proc.poll() is None:
                host.proc.terminate()
                try:
                    host.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    host.kill()


@pytest.fixture(autouse=True)
async def close_db_connections():
    """The runner reaches the database from asgiref's worker thread; close that
    connection after each test so the test database can be dropped."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.fixture
def network(on_anvil, tmp_path, settings):
    settings.CHAIN_RPC = on_anvil.url
    settings.CHAIN_DEPLOYMENTS_DIR = tmp_path / "deployments"
    settings.WALLET_KEYSTORE_FILE = str(on_anvil.keys["platform"].keystore)
    settings.WALLET_PASSPHRASE_FILE = str(on_anvil.keys["platform"].passphrase_file)
    settings.VAR_DIR = tmp_path
    settings.MARKETPLACE_JOB_DEADLINE_S = 120
    wallet._handles.clear()
    discovery.invalidate()
    net = Network(on_anvil, tmp_path)
    yield net
    net.stop()
    discovery.invalidate()
