"""A discovery network on loopback: a bootstrap node process, lightweight hosts registered
on the test's anvil chain, and this process as the client."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from marketplace.client import discovery
from marketplace.p2p import client as p2p
from marketplace.p2p.lightweight import LightHost
from tests.conftest import MODEL, ROOT, free_port

STAKE = 10**16


class Bootstrap:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.port = free_port()
        self.addr_file = tmp_path / "p2p-bootstrap.addr"
        self.proc = None
        self.addrs: list[str] = []

    def start(self) -> Bootstrap:
        with open(self.tmp / "p2p-bootstrap.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "p2p", "bootstrap", "--port", str(self.port),
                 "--key-file", str(self.tmp / "p2p-bootstrap.key"),
                 "--addr-file", str(self.addr_file)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"})
        for _ in range(300):
            if self.addr_file.exists() and self.addr_file.read_text().strip():
                self.addrs = self.addr_file.read_text().split()
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError((self.tmp / "p2p-bootstrap.log").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture
def bootstrap(tmp_path):
    node = Bootstrap(tmp_path).start()
    yield node
    node.stop()


@pytest.fixture
def p2p_on(network, bootstrap, settings):
    settings.P2P_DISCOVERY = True
    settings.P2P_BOOTSTRAP = bootstrap.addrs
    settings.P2P_LOOKUP_INTERVAL_S = 1
    p2p.reset()
    discovery.invalidate()
    yield bootstrap
    p2p.reset()
    discovery.invalidate()


class Hosts:
    def __init__(self, network, bootstrap):
        self.network = network
        self.bootstrap = bootstrap
        self.started: list[LightHost] = []

    async def join(self, role: str, price: int, *, ttl_s: int = 30, register: bool = True,
                   chain=None, url: str | None = None) -> LightHost:
        chain = chain or self.network.anvil.chain(role)
        host = LightHost(chain=chain, url=url or f"http://127.0.0.1:{free_port()}", model=MODEL,
                         price=price, bootstrap=self.bootstrap.addrs, ttl_s=ttl_s)
        if register:
            await host.register(STAKE)
        self.started.append(host)
        return await host.join()

    async def close(self) -> None:
        for host in self.started:
            if host.announcer.node.running:
                await host.leave(say_goodbye=False)


@pytest.fixture
async def light_hosts(network, p2p_on):
    hosts = Hosts(network, p2p_on)
    yield hosts
    await hosts.close()
