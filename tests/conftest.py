"""Fixtures shared across the suite: free ports, a real anvil chain with our contracts,
and a whole local network of real host processes."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from web3 import AsyncWeb3

from marketplace import wallet
from marketplace.chain.connect import http_provider
from marketplace.chain.contracts import Chain
from marketplace.chain.deploy import Terms, deploy
from marketplace.chain.devnet import anvil_args, bundled_model_approvals, dev_keys
from marketplace.chain.keystore import load_account
from marketplace.chain.tx import Sender
from marketplace.client import discovery

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    return free_port()


def start_anvil(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(anvil_args(port, None), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
    for _ in range(200):
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}", data=body,
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("anvil did not start")


@pytest.fixture(scope="session")
def anvil():
    port = free_port()
    proc = start_anvil(port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def dev_keyring(tmp_path_factory):
    return dev_keys(tmp_path_factory.mktemp("keys"))


class Anvil:
    def __init__(self, url, keys, lock_dir):
        self.url = url
        self.keys = keys
        self.lock_dir = lock_dir
        self.made: list[AsyncWeb3] = []

    def w3(self) -> AsyncWeb3:
        w3 = AsyncWeb3(http_provider(self.url))
        self.made.append(w3)
        return w3

    async def close(self) -> None:
        for w3 in self.made:
            await w3.provider.disconnect()

    def sender(self, role: str, w3: AsyncWeb3 | None = None, audit=None) -> Sender:
        key = self.keys[role]
        account = load_account(key.keystore, key.passphrase_file)
        return Sender(w3 or self.w3(), account, lock_dir=self.lock_dir, audit=audit)

    async def deploy(self) -> Chain:
        sender = self.sender("platform")
        deployment = await deploy(sender.w3, sender,
                                  Terms(treasury=self.keys["treasury"].address,
                                        arbitrator=self.keys["arbitrator"].address,
                                        min_stake_wei=10**16,
                                        models=bundled_model_approvals()))
        self.deployment = deployment
        return Chain(sender.w3, deployment, sender)

    def chain(self, role: str) -> Chain:
        sender = self.sender(role)
        return Chain(sender.w3, self.deployment, sender)


@pytest.fixture
async def on_anvil(anvil, dev_keyring, tmp_path):
    net = Anvil(anvil, dev_keyring, tmp_path / "locks")
    await net.deploy()
    yield net
    await net.close()


@pytest.fixture(autouse=True)
async def close_network_sessions():
    """aiohttp warns about sessions left open; close the pool's and the wallet's."""
    yield
    from marketplace import wallet
    from marketplace.client import pool

    await pool.close()
    for handles in (wallet._handles, wallet._arbitrator_handles):
        for handle in list(handles.values()):
            try:
                await handle.close()
            except RuntimeError:
                pass  # bound to a loop that is already closed
        handles.clear()
    # Collect now, so a session some code forgot to close is reported against the test
    # that leaked it rather than against whichever test happens to run next.
    gc.collect()


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

    def start_hosts(self, prices: dict[str, int],
                    args: dict[str, list[str]] | None = None) -> list[HostProcess]:
        """`manage.py runhost` for each role at its price; `args` adds runhost options
        per role (`{"host-3": ["--behaviour", "gzip-bomb"]}`)."""
        started = []
        for role, price in prices.items():
            port = free_port()
            key = self.anvil.keys[role]
            with open(self.tmp / f"{role}.log", "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "manage.py", "runhost", "--port", str(port), "--price",
                     str(price), "--keystore", str(key.keystore), "--passphrase-file",
                     str(key.passphrase_file), "--rpc-url", self.anvil.url, "--deployment",
                     str(self.deployment_file), "--results-dir", str(self.tmp / role),
                     *(args or {}).get(role, [])],
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

    def host_voucher(self, host: HostProcess, channel_id: int) -> int | None:
        """The amount of the latest voucher the host keeps for a channel (its own book,
        marketplace.host.vouchers), or None."""
        import sqlite3

        db = sqlite3.connect(self.tmp / host.role / "vouchers.sqlite3")
        try:
            row = db.execute("SELECT amount FROM vouchers WHERE channel_id = ?",
                             (channel_id,)).fetchone()
        finally:
            db.close()
        return None if row is None else int(row[0])

    def stop(self):
        for host in self.hosts:
            if host.proc.poll() is None:
                host.proc.terminate()
                try:
                    host.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    host.kill()


@pytest.fixture(autouse=True)
async def close_loop_clients():
    """The gateway's upstream session, database connections and async Redis clients
    belong to the test's event loop: closed with it."""
    yield
    from accounts.ratelimit import rate_limit_clients_close
    from gateway.conn import gateway_connections_close
    from gateway.upstream import upstream_close

    await upstream_close()
    await gateway_connections_close()
    await rate_limit_clients_close()


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
    settings.MARKETPLACE_ARBITRATOR_KEYSTORE_FILE = str(on_anvil.keys["arbitrator"].keystore)
    settings.MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE = str(
        on_anvil.keys["arbitrator"].passphrase_file)
    settings.VAR_DIR = tmp_path
    settings.MARKETPLACE_JOB_DEADLINE_S = 120
    wallet._handles.clear()
    discovery.invalidate()
    net = Network(on_anvil, tmp_path)
    yield net
    net.stop()
    discovery.invalidate()


# ---- a chain RPC URL that holds a secret, and dies ----------------------------------------

RPC_SECRET = "key-SECRET123"
# What no answer, page or reply may show of a failure: the secret in the RPC URL, the
# exception classes on the way to it, and stack details.
LEAKS = (RPC_SECRET, "Traceback", "ChainError", "ClientError", "ClientConnectorError",
         "ConnectionRefusedError", "OSError", "Cannot connect", 'File "')


@pytest.fixture
async def secret_rpc(network, settings, unused_port, monkeypatch):
    """A host is up and discovered through the real chain; then the chain's RPC becomes a
    provider's URL with its API key in the path, on a port where nothing listens. A job
    gets past its quote (discovery is cached) and fails on the chain."""
    from marketplace.client import runner

    network.start_hosts({"host-1": 10**9})
    assert await discovery.candidates(MODEL)
    for handle in list(wallet._handles.values()):
        await handle.close()
    wallet._handles.clear()
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}/{RPC_SECRET}"
    # The runner would wait a minute for the node to come back; one try is enough here.
    monkeypatch.setattr(runner, "CHAIN_WAIT_ATTEMPTS", 1)
    return settings.CHAIN_RPC


@contextlib.contextmanager
def llama_server_running(log_path: Path | None = None, *args: str):
    """llama-cpp-python's OpenAI-compatible server on the bundled model, on a free port:
    a real upstream. Its output goes to `log_path` (shown if it does not start)."""
    from marketplace.weights import bundled_model_path

    port = free_port()
    with open(log_path or os.devnull, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path()),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", *args],
            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(log_path.read_text() if log_path else
                           "llama_cpp.server did not start")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def llama_server():
    with llama_server_running() as url:
        yield url
