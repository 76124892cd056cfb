"""`devnet up | down | status`: anvil, our contracts and the local hosts, as background
processes recorded under var/devnet/, so any terminal can stop what another started."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from marketplace.chain.devnet import (
    CHAIN_ID,
    anvil_args,
    dev_keys,
    ensure_devnet_deployed,
    wait_for_rpc,
)
from marketplace.processes import ProcessGroup, wait_http
from marketplace.wallet import audit_recorder

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


def chain_up() -> None:
    """anvil with its state under var/devnet/, and our contracts deployed once and reused."""
    processes = group()
    log_dir = settings.DEVNET_DIR / "logs"
    anvil = processes.start("anvil", anvil_args(settings.DEVNET_PORT,
                                                settings.DEVNET_DIR / "chain-state.json"),
                            log=log_dir / "anvil.log", url=rpc_url())
    try:
        wait_for_rpc(rpc_url())
    except TimeoutError:
        raise TimeoutError(f"anvil did not answer at {rpc_url()}; see {anvil.log}") from None
    asyncio.run(ensure_devnet_deployed(rpc_url(), settings.VAR_DIR,
                                       audit=audit_recorder(CHAIN_ID)))


def p2p_bootstrap_up() -> list[str]:
    """The discovery network's bootstrap node (docs/discovery.md); its multiaddrs."""
    addr_file = settings.DEVNET_DIR / "p2p-bootstrap.addr"
    if group().running("p2p-bootstrap") is None:
        addr_file.unlink(missing_ok=True)  # a stopped node's address would not answer
    record = group().start("p2p-bootstrap", [sys.executable, "manage.py", "p2p", "bootstrap"],
                           log=settings.DEVNET_DIR / "logs" / "p2p-bootstrap.log",
                           url=None, cwd=settings.BASE_DIR)
    for _ in range(300):
        if addr_file.exists() and addr_file.read_text().strip():
            return addr_file.read_text().split()
        if group().running("p2p-bootstrap") is None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the p2p bootstrap node did not start; see {record.log}")


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


def up(hosts: int = 3) -> list[Status]:
    chain_up()
    if settings.P2P_DISCOVERY and not settings.P2P_BOOTSTRAP:
        p2p_bootstrap_up()
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
