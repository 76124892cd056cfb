"""Clients find hosts through the DHT and gossip, with the registry as the gate."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from eth_account import Account

from marketplace.chain.contracts import Chain
from marketplace.chain.tx import Sender
from marketplace.client import discovery
from marketplace.p2p import client as p2p
from observability.health import run_checks
from observability.metrics import hosts_refused, p2p_fallbacks, p2p_records_rejected
from tests.conftest import MODEL

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def registry_list_disabled(monkeypatch):
    async def refuse(self, model):
        raise AssertionError("the registry's list call was used")

    monkeypatch.setattr(Chain, "active_nodes", refuse)


async def found(model_chain, *, until, within: float = 10.0) -> list:
    """Discover until `until(candidates)` holds, or `within` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        candidates = await discovery.candidates(MODEL, chain=model_chain, fresh=True)
        if until(candidates) or time.monotonic() > deadline:
            return candidates
        await asyncio.sleep(0.2)


def addresses(candidates) -> set[str]:
    return {c.address for c in candidates}


async def test_it_finds_three_hosts_through_the_dht_without_the_registry_list(
        network, light_hosts, monkeypatch):
    hosts = [await light_hosts.join(f"host-{i}", 10**9 * i) for i in (1, 2, 3)]
    registry_list_disabled(monkeypatch)
    platform = network.anvil.chain("platform")
    candidates = await found(platform, until=lambda c: len(c) == 3)
    assert addresses(candidates) == {h.address for h in hosts}
    assert {c.price_per_token_wei for c in candidates} == {10**9, 2 * 10**9, 3 * 10**9}
    assert p2p.status()["mode"] == "dht"


async def test_a_fourth_host_that_joins_is_found(network, light_hosts, monkeypatch):
    for i in (1, 2, 3):
        await light_hosts.join(f"host-{i}", 10**9)
    registry_list_disabled(monkeypatch)
    platform = network.anvil.chain("platform")
    assert len(await found(platform, until=lambda c: len(c) == 3)) == 3
    fourth = await light_hosts.join("host-4", 10**9)
    started = time.monotonic()
    candidates = await found(platform, until=lambda c: fourth.address in addresses(c))
    assert fourth.address in addresses(candidates)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("say_goodbye", [False, True])
async def test_a_host_that_leaves_disappears_within_its_ttl(network, light_hosts, settings,
                                                            monkeypatch, say_goodbye):
    ttl = 5
    stays = await light_hosts.join("host-1", 10**9, ttl_s=ttl)
    leaves = await light_hosts.join("host-2", 10**9, ttl_s=ttl)
    registry_list_disabled(monkeypatch)
    platform = network.anvil.chain("platform")
    assert len(await found(platform, until=lambda c: len(c) == 2)) == 2
    await leaves.leave(say_goodbye=say_goodbye)
    left_at = time.monotonic()
    candidates = await found(platform, until=lambda c: leaves.address not in addresses(c),
                             within=ttl + 5)
    assert addresses(candidates) == {stays.address}
    assert time.monotonic() - left_at <= ttl + 1
    if say_goodbye:  # the goodbye on gossip is seen at once
        assert time.monotonic() - left_at < 2


async def test_a_price_change_reaches_the_client_through_gossip(network, light_hosts,
                                                                monkeypatch):
    host = await light_hosts.join("host-1", 10**9)
    registry_list_disabled(monkeypatch)
    platform = network.anvil.chain("platform")
    assert [c.price_per_token_wei for c in await found(platform, until=bool)] == [10**9]
    view = p2p.view()
    lookups = view.lookups
    await host.set_price(3 * 10**9)
    candidates = await found(platform, until=lambda c: c and c[0].price_per_token_wei
                             == 3 * 10**9, within=5)
    assert [c.price_per_token_wei for c in candidates] == [3 * 10**9]
    # The new record came by gossip, not by another lookup of the DHT.
    record = view.records(MODEL)[0]
    assert record.prices()[MODEL] == 3 * 10**9
    assert view.lookups - lookups <= 1 or record.seq > 0


async def test_a_forged_record_of_an_unstaked_key_is_never_used(network, light_hosts,
                                                                monkeypatch):
    honest = await light_hosts.join("host-1", 10**9)
    # A valid libp2p peer whose record is signed by its own key, but no stake on chain.
    stranger = Account.create()
    w3 = network.anvil.w3()
    chain = Chain(w3, network.anvil.deployment,
                  Sender(w3, stranger, lock_dir=network.tmp / "locks"))
    forged = await light_hosts.join("forger", 1, register=False, chain=chain)
    registry_list_disabled(monkeypatch)
    platform = network.anvil.chain("platform")
    before = p2p_records_rejected.labels("unstaked")._value.get()
    for _ in range(5):
        candidates = await discovery.candidates(MODEL, chain=platform, fresh=True)
        assert forged.address not in addresses(candidates)
        await asyncio.sleep(0.3)
    assert honest.address in addresses(candidates)
    assert forged.address in {r.address for r in p2p.view().records(MODEL)}  # seen, not used
    assert p2p_records_rejected.labels("unstaked")._value.get() > before


async def test_a_host_that_unregisters_is_dropped_by_the_registry_event(network, light_hosts,
                                                                        monkeypatch):
    """Its record is still live on the network; the gate hears the registry's event."""
    stays = await light_hosts.join("host-1", 10**9)
    leaves = await light_hosts.join("host-2", 10**9)
    registry_list_disabled(monkeypatch)
    platform = network.anvil.chain("platform")
    assert len(await found(platform, until=lambda c: len(c) == 2)) == 2
    reads = p2p.gate().rpc_reads
    for _ in range(3):  # warm: the gate asks the chain nothing more
        await discovery.candidates(MODEL, chain=platform, fresh=True)
    assert p2p.gate().rpc_reads == reads
    await leaves.chain.request_unregister()
    candidates = await found(platform, until=lambda c: leaves.address not in addresses(c),
                             within=5)
    assert addresses(candidates) == {stays.address}
    assert leaves.address in {r.address for r in p2p.view().records(MODEL)}


async def test_a_record_pointing_where_we_do_not_send_is_skipped(network, light_hosts,
                                                                  monkeypatch):
    """A registered, staked host whose signed record names a cloud metadata address."""
    honest = await light_hosts.join("host-1", 10**9)
    await light_hosts.join("host-2", 10**9, url="http://169.254.169.254/latest")
    registry_list_disabled(monkeypatch)
    platform = network.anvil.chain("platform")
    before = hosts_refused.labels("HOST_URL_REFUSED")._value.get()
    await found(platform, until=lambda c: False, within=2)
    candidates = await discovery.candidates(MODEL, chain=platform, fresh=True)
    assert addresses(candidates) == {honest.address}
    assert hosts_refused.labels("HOST_URL_REFUSED")._value.get() > before


async def test_discovery_falls_back_to_the_registry_when_the_bootstrap_node_is_stopped(
        network, p2p_on, settings):
    network.start_hosts({"host-1": 10**9})
    p2p_on.stop()
    p2p.reset()
    platform = network.anvil.chain("platform")
    candidates = await discovery.candidates(MODEL, chain=platform, fresh=True)
    assert [c.address for c in candidates] == [network.hosts[0].address]
    status = p2p.status()
    assert status["mode"] == "registry"
    assert "unreachable" in status["warning"] or "did not start" in status["warning"]
    healthy, checks = await sync_to_async(run_checks)(only={"discovery"})
    assert checks["discovery"]["ok"] and checks["discovery"]["mode"] == "registry"
    assert checks["discovery"]["warning"].startswith("discovery fell back to the registry")
    assert p2p_fallbacks._value.get() > 0
