"""GET /v1/models: each host's figures, measured by our own jobs and probes over the recent
window, with hosts of known speed on the devnet: an honest host, and one at half speed
(`runhost --behaviour half-speed`, marketplace/host/behaviours.py). Ranking reads the same
figures (marketplace.client.ranking)."""

from __future__ import annotations

import statistics

import pytest
from django.test import AsyncClient

from marketplace.client import discovery
from marketplace.client.ranking import rank
from marketplace.host.behaviours import HalfSpeed
from marketplace.services import JobSpec, run_job
from tests.conftest import MODEL

pytestmark = pytest.mark.django_db(transaction=True)

FAST_PRICE = 10**9
SLOW_PRICE = 2 * 10**9
JOBS = 3


async def jobs_on(host, **limits) -> None:
    for n in range(JOBS):
        outcome = await run_job(JobSpec(model=MODEL, prompt=f"Describe a forest in spring. {n}",
                                        max_tokens=32, temperature=0.0, **limits))
        assert outcome.host == host.address and outcome.tokens > 1


async def test_each_host_shows_its_own_figures_and_the_half_speed_host_half_the_rate(
        network, alice):
    # The slow host alone first; then the fast one, cheaper, which the price ceiling keeps
    # the next jobs on. Each host has only its own jobs.
    (slow,) = network.start_hosts({"host-1": SLOW_PRICE},
                                  args={"host-1": ["--behaviour", HalfSpeed.name]})
    await jobs_on(slow)
    (fast,) = network.start_hosts({"host-2": FAST_PRICE})
    discovery.invalidate()
    await jobs_on(fast, max_price_per_token_wei=FAST_PRICE)
    discovery.invalidate()

    response = await AsyncClient().get("/v1/models", headers=alice.headers)

    assert response.status_code == 200, response.content
    (entry,) = response.json()["data"]
    assert entry["window_s"] == 3600 and entry["nodes"] == 2
    hosts = {h["address"]: h for h in entry["hosts"]}
    assert list(hosts) == [fast.address, slow.address]  # cheapest first
    for host in hosts.values():
        assert host["attempts"] == JOBS and host["success_rate"] == 1.0
        assert host["uptime"] == 1.0 and host["probes"] >= 2
    ratio = hosts[slow.address]["tokens_per_s"] / hosts[fast.address]["tokens_per_s"]
    # Half its own generation rate; the two hosts run at different moments of a shared
    # machine, so the ratio has a margin.
    assert 0.3 < ratio < 0.75, hosts
    # Its first token comes HalfSpeed.FIRST_TOKEN_DELAY_S late, well out of the chain's noise.
    gap = hosts[slow.address]["ttft_p50_ms"] - hosts[fast.address]["ttft_p50_ms"]
    assert gap > 0.6 * HalfSpeed.FIRST_TOKEN_DELAY_S * 1000, hosts
    assert hosts[fast.address]["price_per_token"] == str(FAST_PRICE)
    # The model's own figures are the median of its hosts'.
    assert entry["ttft_ms"] == pytest.approx(statistics.median(
        h["ttft_p50_ms"] for h in hosts.values()), abs=0.1)

    # Ranking reads the same figures: its latency term is the measured TTFT.
    found = {c.address: c for c in await discovery.candidates(MODEL)}
    assert found[slow.address].ttft_ms == hosts[slow.address]["ttft_p50_ms"]
    ranked = rank(list(found.values()), model=MODEL)
    assert ranked[0].address == fast.address


async def test_a_model_without_hosts_has_no_figures(network, alice):
    response = await AsyncClient().get("/v1/models", headers=alice.headers)

    assert response.status_code == 200, response.content
    (entry,) = response.json()["data"]
    assert entry["nodes"] == 0 and entry["hosts"] == []
    assert entry["ttft_ms"] is None and entry["tokens_per_s"] is None
