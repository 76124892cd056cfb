"""Starting a host: load the wallet, connect to the chain, check that the model file is the
one the model id names on chain, load the model, serve."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from web3 import AsyncWeb3

from marketplace.chain.connect import http_provider
from marketplace.chain.contracts import ZERO_HASH, Chain, Deployment
from marketplace.chain.keystore import load_account
from marketplace.chain.tx import Sender, TxRecord
from marketplace.host.backends import SMOLLM2_ID, LlamaCppBackend, OpenAICompatibleBackend
from marketplace.host.cid import ResultStore
from marketplace.host.server import HostConfig, HostNode
from marketplace.weights import bundled_model_path, file_sha256, requantize

log = logging.getLogger("marketplace.host")


@dataclass
class HostOptions:
    port: int
    price_per_token_wei: int
    keystore: Path
    passphrase_file: Path
    rpc_url: str
    deployment_file: Path
    results_dir: Path
    host: str = "127.0.0.1"
    public_url: str | None = None
    backend: str = "llama.cpp"
    model: str = SMOLLM2_ID
    model_path: Path | None = None
    upstream_url: str | None = None
    upstream_model: str | None = None
    capacity: int = 8
    parallel: int = 4
    stake_wei: int = 10**17
    region: str = "local"
    max_connections: int = 256
    max_connections_per_ip: int = 32
    handshake_timeout_s: float = 10.0
    failed_handshakes_per_minute: int = 20
    behaviour: str = "honest"
    channels: bool = True
    credit_limit_wei: int | None = None
    vouchers_every: int = 16
    payment_wait_s: float = 30.0
    # Multiaddrs of the discovery network's bootstrap nodes; empty: not on the network.
    p2p_bootstrap: tuple[str, ...] = ()
    p2p_port: int = 0


# Hostile behaviours (for tests) that serve other weights under the model id: a dishonest
# host runs its own code and would leave this check out, so these do too. The verifier,
# not this check, is what catches them.
SKIP_WEIGHTS_CHECK = frozenset({"requantized"})


class WeightsRefused(ValueError):
    """The model file is not the one its model id names on chain (or the id names none)."""


async def check_weights(chain: Chain, model_id: str, model_path: Path | None) -> bytes:
    """Refuse to serve `model_id` unless it is approved on chain and, when this host loads
    the GGUF itself (`model_path`), the file's sha256 is the approved one: a model id names
    exact weights, and a host serving other ones (requantized, fine-tuned, corrupted) under
    it would sell clients something they did not pay for. Returns the on-chain hash.

    Without a file (an OpenAI-compatible upstream that loads its own) there is nothing to
    hash here; the verifier, which re-scores with the pinned file, holds the host to it."""
    pinned = await chain.model_hash(model_id)
    if pinned == ZERO_HASH:
        raise WeightsRefused(f"model {model_id!r} is not approved on chain (the registry has "
                             "no sha256 for it): the registry's admin approves models "
                             "with approveModel")
    if model_path is None:
        log.warning("model %s: no GGUF file here to check against its on-chain sha256 %s "
                    "(an upstream loads the weights)", model_id, pinned.hex())
        return pinned
    actual = await asyncio.to_thread(file_sha256, model_path)
    if actual != pinned:
        raise WeightsRefused(
            f"{model_path} has sha256 {actual.hex()}, but model {model_id!r} is approved on "
            f"chain as sha256 {pinned.hex()}: these are other weights, and this host will "
            "not serve them under that id (use the approved file, or another model id)")
    return pinned


def gguf_path(options: HostOptions) -> Path | None:
    """The GGUF file this host loads itself, if any."""
    if options.backend == "llama.cpp":
        return Path(options.model_path) if options.model_path else bundled_model_path()
    return Path(options.model_path) if options.model_path else None


def make_backend(options: HostOptions):
    if options.backend == "llama.cpp":
        model_path = options.model_path
        if options.behaviour == "requantized":
            source = model_path or bundled_model_path()
            model_path = requantize(source, options.results_dir / f"{source.stem}.Q2_K.gguf")
        return LlamaCppBackend(model_path, model_id=options.model, parallel=options.parallel)
    if options.backend == "openai":
        if not options.upstream_url:
            raise ValueError("--upstream-url is required for the openai backend")
        return OpenAICompatibleBackend(options.upstream_url, model_id=options.model,
                                       upstream_model=options.upstream_model)
    raise ValueError(f"unknown backend {options.backend!r}")


def jsonl_audit(path: Path):
    """The host has no database: its transactions are appended to a JSON-lines file."""
    import json
    from dataclasses import asdict

    path.parent.mkdir(parents=True, exist_ok=True)

    def append(line: str) -> None:
        with open(path, "a") as out:
            out.write(line)

    async def audit(record: TxRecord) -> None:
        await asyncio.to_thread(append, json.dumps(asdict(record)) + "\n")

    return audit


async def build(options: HostOptions) -> HostNode:
    account = await asyncio.to_thread(load_account, options.keystore, options.passphrase_file)
    w3 = AsyncWeb3(http_provider(options.rpc_url, request_kwargs={"timeout": 10}))
    deployment = Deployment.from_json(options.deployment_file.read_text())
    sender = Sender(w3, account, lock_dir=options.results_dir / "locks",
                    audit=jsonl_audit(options.results_dir / "transactions.jsonl"))
    chain = Chain(w3, deployment, sender)
    try:
        # Before the model is loaded: a refused file costs a hash, not a load.
        if options.behaviour not in SKIP_WEIGHTS_CHECK:
            await check_weights(chain, options.model, gguf_path(options))
    except BaseException:
        await chain.close()
        raise
    backend = await asyncio.to_thread(make_backend, options)
    config = HostConfig(public_url=options.public_url or f"http://{options.host}:{options.port}",
                        price_per_token_wei=options.price_per_token_wei,
                        stake_wei=options.stake_wei, region=options.region,
                        capacity=options.capacity, max_connections=options.max_connections,
                        max_connections_per_ip=options.max_connections_per_ip,
                        handshake_timeout_s=options.handshake_timeout_s,
                        failed_handshakes_per_minute=options.failed_handshakes_per_minute,
                        behaviour=options.behaviour, channels=options.channels,
                        credit_limit_wei=options.credit_limit_wei,
                        vouchers_every=options.vouchers_every,
                        payment_wait_s=options.payment_wait_s)
    return HostNode(backend=backend, chain=chain,
                    store=ResultStore(options.results_dir / "results"), config=config)


async def serve(options: HostOptions, *, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT when run as a process)."""
    node = await build(options)
    runner = node.runner()
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port)
    await site.start()
    log.info("host %s serving %s on %s:%s", node.address, node.backend.model_id, options.host,
             options.port)
    announcer = await asyncio.to_thread(announce, node, options)
    stop = stop or asyncio.Event()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        if announcer is not None:
            await asyncio.to_thread(announcer.stop)
        await runner.cleanup()


def announce(node: HostNode, options: HostOptions):
    """Join the discovery network and announce this host (docs/discovery.md), or None."""
    if not options.p2p_bootstrap:
        return None
    from marketplace.p2p.announcer import Announcer
    from marketplace.p2p.node import P2PError

    try:
        return Announcer(private_key=bytes(node.chain.sender.account.key), address=node.address,
                         url=node.config.public_url, capabilities=node.capabilities_body,
                         bootstrap=list(options.p2p_bootstrap), port=options.p2p_port).start()
    except P2PError as exc:
        # Clients still find this host through the registry.
        log.warning("not on the discovery network: %s", exc)
        return None


def run(options: HostOptions) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(options, stop=stop)

    asyncio.run(main())
