"""Discovery over the DHT (docs/discovery.md), on loopback with a real anvil chain: a
bootstrap node, 20 lightweight hosts (registered and staked, serving no model) and a
client. Reports how long a new host takes to be found, the p95 of a DHT lookup (providers
and their 20 signed records), and the chain RPC calls that discovery makes per job once
warm, against the registry path's in the same run."""

from __future__ import annotations

import asyncio
import contextvars
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HOSTS = 20
JOINS = 3
LOOKUPS = 20
COLD_LOOKUPS = 10
JOBS = 20
MODEL = "smollm2-135m-instruct"
STAKE = 10**16

ROOT = Path(__file__).resolve().parent.parent
counting = contextvars.ContextVar("counting", default=False)


def counted(chain, calls: list[int]):
    """Count the JSON-RPC requests this chain's connection makes while `counting` is set."""
    provider = chain.w3.provider
    make_request = provider.make_request

    async def make_request_counted(method, params):
        if counting.get():
            calls[0] += 1
        return await make_request(method, params)

    provider.make_request = make_request_counted
    return chain


async def per_job(candidates, chain, calls: list[int]) -> float:
    calls[0] = 0
    token = counting.set(True)
    try:
        for _ in range(JOBS):
            await candidates(MODEL, chain=chain, fresh=True)
    finally:
        counting.reset(token)
    return calls[0] / JOBS


async def main(var_dir: Path) -> None:
    from django.conf import settings

    from bench.chainkit import BenchChain
    from bench.common import free_port, percentile, report
    from marketplace.client import discovery
    from marketplace.p2p import bootstrap
    from marketplace.p2p import client as p2p
    from marketplace.p2p.view import Limits, View

    net = BenchChain()
    procs: list = []
    boot = None
    try:
        await net.deploy()
        platform = counted(net.chain("platform"), calls := [0])
        boot = await asyncio.to_thread(bootstrap.start, key_file=var_dir / "boot.key",
                                       port=free_port(), models=[MODEL])
        settings.CHAIN_RPC = net.url
        settings.P2P_DISCOVERY = True
        settings.P2P_BOOTSTRAP = boot.addrs
        settings.MARKETPLACE_ALLOWED_HOST_NETWORKS = ["127.0.0.0/8"]

        (var_dir / "deployment.json").write_text(net.deployment.to_json())
        # The hosts run in a process of their own, as they would on other machines: 20
        # trio loops sharing this process's GIL would slow the client's side too.
        hosts_proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.bench_dht", "hosts", net.url, str(var_dir),
            *boot.addrs, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        procs.append(hosts_proc)

        async def said(prefix: str) -> str:
            while True:
                line = (await hosts_proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("the hosts process exited")
                if line.startswith(prefix):
                    return line.split(maxsplit=1)[1].strip()

        async def command(text: str) -> None:
            hosts_proc.stdin.write(text.encode() + b"\n")
            await hosts_proc.stdin.drain()

        await command(f"start {HOSTS}")
        await said("ready")
        found = await discovery.candidates(MODEL, chain=platform, fresh=True)  # warm-up
        deadline = time.monotonic() + 30
        while len(found) < HOSTS and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            found = await discovery.candidates(MODEL, chain=platform, fresh=True)
        if len(found) < HOSTS:
            raise RuntimeError(f"only {len(found)} of {HOSTS} hosts found on the DHT")

        # A new host is found: by its gossip through the bootstrap node, or the next lookup.
        joins = []
        for _ in range(JOINS):
            await command("join")
            address = await said("joining")
            started = time.perf_counter()
            while address not in {c.address for c in await discovery.candidates(
                    MODEL, chain=platform, fresh=True)}:
                if time.perf_counter() - started > 60:
                    raise RuntimeError("a new host was not found within 60 s")
                await asyncio.sleep(0.05)
            joins.append(time.perf_counter() - started)

        # One DHT lookup: the providers of the model, then each one's signed record.
        view = p2p.view()
        lookups = []
        for _ in range(LOOKUPS):
            started = time.perf_counter()
            await view.lookup(MODEL)
            lookups.append((time.perf_counter() - started) * 1000)

        # A first lookup by a new client: the providers from the network (nothing in its
        # own provider store yet) and all 20+ records fetched.
        cold, cold_found = [], []
        for _ in range(COLD_LOOKUPS):
            fresh = await asyncio.to_thread(View(
                private_key=os.urandom(32), bootstrap=boot.addrs, gate=p2p.gate(),
                limits=Limits.from_settings()).start)
            try:
                started = time.perf_counter()
                await fresh.lookup(MODEL)
                cold.append((time.perf_counter() - started) * 1000)
                cold_found.append(len(fresh.records(MODEL)))
            finally:
                await asyncio.to_thread(fresh.stop)

        dht_calls = await per_job(discovery.candidates, platform, calls)
        settings.P2P_DISCOVERY = False
        registry_calls = await per_job(discovery.candidates, platform, calls)

        report("dht hosts", HOSTS, "hosts")
        report("dht join s", statistics.median(joins), "s")
        report("dht lookup p95 ms", percentile(lookups, 95), "ms")
        report("dht lookup p50 ms", percentile(lookups, 50), "ms")
        report("dht first lookup p95 ms", percentile(cold, 95), "ms")
        report("dht first lookup p50 ms", percentile(cold, 50), "ms")
        # Each key's walk is cut short at 3 s (docs/discovery.md): gossip brings the rest.
        report("dht first lookup hosts found min", min(cold_found), f"of {HOSTS + JOINS}")
        report("discovery rpc calls per job", dht_calls, "calls")
        report("discovery rpc calls per job registry path", registry_calls, "calls")
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
        if boot is not None:
            boot.stop()
        p2p.reset()
        net.close()


async def hosts_main(rpc_url: str, var_dir: Path, bootstrap_addrs: list[str]) -> None:
    """The hosts' process: `start N` registers and joins N lightweight hosts, then says
    "ready"; `join` registers one more, says "joining ADDRESS" and joins."""
    from eth_account import Account
    from web3 import AsyncWeb3

    from bench.common import free_port
    from marketplace.chain.connect import http_provider
    from marketplace.chain.contracts import Chain, Deployment
    from marketplace.chain.tx import Sender
    from marketplace.funds import faucet
    from marketplace.p2p.lightweight import LightHost

    deployment = Deployment.from_json((var_dir / "deployment.json").read_text())
    hosts: list[LightHost] = []

    async def registered(price: int) -> LightHost:
        account = Account.create()
        w3 = AsyncWeb3(http_provider(rpc_url))
        await faucet(w3, account.address, 10**18)
        chain = Chain(w3, deployment, Sender(w3, account, lock_dir=var_dir / "host-locks"))
        host = LightHost(chain=chain, url=f"http://127.0.0.1:{free_port()}", model=MODEL,
                         price=price, bootstrap=bootstrap_addrs)
        await host.register(STAKE)
        hosts.append(host)
        return host

    loop = asyncio.get_running_loop()
    try:
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).split():
            if line[0] == "start":
                news = [await registered(10**9 + i) for i in range(int(line[1]))]
                await asyncio.gather(*(h.join() for h in news))
                print("ready", len(hosts), flush=True)
            elif line[0] == "join":
                host = await registered(10**9)
                print("joining", host.address, flush=True)
                await host.join()
    finally:
        for host in hosts:
            await host.leave(say_goodbye=False)


if __name__ == "__main__":
    if sys.argv[1:2] == ["hosts"]:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
        os.environ["VAR_DIR"] = sys.argv[3]
        os.environ["LOG_LEVEL"] = "ERROR"
        import django

        django.setup()
        asyncio.run(hosts_main(sys.argv[2], Path(sys.argv[3]), sys.argv[4:]))
        sys.exit(0)
    with tempfile.TemporaryDirectory(prefix="bench-dht-") as tmp:
        from bench.bench_client import setup_django

        setup_django(Path(tmp))
        asyncio.run(main(Path(tmp)))
    sys.exit(0)
