"""`devnet up | down | status`: anvil, our contracts and the local hosts, as background
processes recorded under var/devnet/, so any terminal can stop what another started."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from web3 import AsyncWeb3

from marketplace.chain.deploy import Terms, ensure_deployed
from marketplace.chain.devnet import anvil_args, dev_keys
from marketplace.chain.keystore import load_account
from marketplace.chain.tx import Sender
from marketplace.processes import ProcessGroup, wait_http
from marketplace.wallet import audit_recorder, web3

# Three local hosts at different prices (wei per token), so ranking has a real choice.
HOST_PRICES = {"host-1": 1_000_000_000, "host-2": 1_500_000_000, "host-3": 2_000_000_000}
HOST_BASE_PORT = 9101


@dataclass
class Status:
    name: str
    running: bool
    url: str | None
    detail: str = ""


def group() -> ProcessGroup:
    return ProcessGroup(settings.DEVNET_DIR / "processes.json")


def rpc_url() -> str:
    return f"http://127.0.0.1:{settings.DEVNET_PORT}"


async def _deploy() -> None:
    w3: AsyncWeb3 = web3(rpc_url())
    keys = dev_keys(settings.DEVNET_DIR / "keys")
    account = await asyncio.to_thread(load_account, keys["platform"].keystore,
                                      keys["platform"].passphrase_file)
    sender = Sender(w3, account, lock_dir=settings.VAR_DIR / "locks",
                    audit=audit_recorder(await w3.eth.chain_id))
    await ensure_deployed(w3, sender, Terms(treasury=keys["treasury"].address,
                                            min_stake_wei=10**16, cooldown_s=3600,
                                            fee_bps=250, dispute_window_s=600),
                          settings.CHAIN_DEPLOYMENTS_DIR)


def chain_up() -> None:
    processes = group()
    log_dir = settings.DEVNET_DIR / "logs"
    anvil = processes.start("anvil", anvil_args(settings.DEVNET_PORT,
                                                settings.DEVNET_DIR / "chain-state.json"),
                            log=log_dir / "anvil.log", url=rpc_url())
    _wait_rpc(rpc_url(), anvil)
    asyncio.run(_deploy())


def hosts_up(count: int = 3) -> list[str]:
    processes = group()
    keys = dev_keys(settings.DEVNET_DIR / "keys")
    urls = []
    starting = []
    for i, (role, price) in enumerate(list(HOST_PRICES.items())[:count]):
        port = HOST_BASE_PORT + i
        url = f"http://127.0.0.1:{port}"
        record = processes.start(
            role,
            [sys.executable, "manage.py", "runhost", "--port", str(port), "--price", str(price),
             "--keystore", str(keys[role].keystore),
             "--passphrase-file", str(keys[role].passphrase_file),
             "--rpc-url", rpc_url(), "--results-dir", str(settings.DEVNET_DIR / role)],
            log=settings.DEVNET_DIR / "logs" / f"{role}.log", url=url,
            cwd=settings.BASE_DIR,
        )
        starting.append((record, url))
        urls.append(url)
    for record, url in starting:
        wait_http(f"{url}/health", timeout=60, process=record)
    return urls


def _wait_rpc(url: str, record) -> None:
    import json
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, data=body.encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"anvil did not answer at {url}; see {record.log}")


def up(hosts: int = 3) -> list[Status]:
    chain_up()
    if hosts:
        hosts_up(hosts)
    return status()


def down() -> list[str]:
    return group().stop_all()


def status() -> list[Status]:
    processes = group()
    found = []
    for name, record in processes.records.items():
        found.append(Status(name, processes.running(name) is not None, record.url,
                            f"pid {record.pid}, log {Path(record.log).name}"))
    return found
