import pytest

from marketplace.client.ranking import Candidate, rank
from marketplace.figures import HostFigures


def host(address, *, price=100, latency=10.0, good=0, bad=0, chain_good=0.0, chain_bad=0.0,
         model="m", queue_free=True, probe_ms=5.0):
    """`latency` is the host's measured TTFT p50 (None: not measured in the window)."""
    return Candidate(address=address, url=f"http://{address}", model=model,
                     price_per_token_wei=price, probe_ms=probe_ms,
                     figures=HostFigures(ttft_p50_ms=latency), local_good=good,
                     local_bad=bad, chain_good=chain_good, chain_bad=chain_bad,
                     queue_free=queue_free)


def test_the_weights_are_latency_reputation_and_price():
    (only,) = rank([host("a")], model="m")
    assert only.score == 1.0  # the best on every term scores 0.3 + 0.5 + 0.2


def test_a_reliable_host_outranks_a_cheaper_one_with_failures():
    reliable = host("reliable", price=200, good=50)
    flaky = host("flaky", price=100, good=5, bad=20)
    ranked = rank([flaky, reliable], model="m")
    assert [c.address for c in ranked] == ["reliable", "flaky"]


def test_between_equals_the_cheaper_host_wins():
    ranked = rank([host("dear", price=300), host("cheap", price=100)], model="m")
    assert ranked[0].address == "cheap"
    assert ranked[0].score - ranked[1].score == pytest.approx(0.2 * (1 - 100 / 300), abs=1e-5)


def test_measured_ttft_counts_for_three_tenths():
    ranked = rank([host("slow", latency=200.0), host("fast", latency=10.0)], model="m")
    assert ranked[0].address == "fast"
    expected = 0.3 * (1 - (50 + 10) / (50 + 200))
    assert ranked[0].score - ranked[1].score == pytest.approx(expected, abs=1e-5)


def test_the_probe_round_trip_ranks_nothing():
    ranked = rank([host("near-but-slow", latency=400.0, probe_ms=1.0),
                   host("far-but-fast", latency=100.0, probe_ms=300.0)], model="m")
    assert ranked[0].address == "far-but-fast"


def test_an_unmeasured_host_is_given_the_median_ttft_of_the_measured_ones():
    ranked = rank([host("fast", latency=100.0), host("slow", latency=300.0),
                   host("middle", latency=200.0), host("new", latency=None)], model="m")
    scores = {c.address: c.score for c in ranked}
    assert scores["new"] == scores["middle"]
    assert scores["fast"] > scores["new"] > scores["slow"]


def test_when_no_host_is_measured_latency_decides_nothing():
    ranked = rank([host("a", latency=None, price=200), host("b", latency=None)], model="m")
    assert [c.address for c in ranked] == ["b", "a"]
    assert ranked[1].score == pytest.approx(0.3 + 0.5 + 0.2 * 100 / 200)


def test_a_few_milliseconds_of_jitter_do_not_outweigh_price():
    ranked = rank([host("dear-but-1ms-faster", latency=2.0, price=300),
                   host("cheap", latency=3.0, price=100)], model="m")
    assert ranked[0].address == "cheap"


def test_filters_drop_wrong_model_slow_dear_busy_and_excluded_hosts():
    hosts = [
        host("ok"),
        host("other-model", model="x"),
        host("too-slow", latency=900.0),
        host("unmeasured", latency=None, price=101),
        host("too-dear", price=10_000),
        host("busy", queue_free=False),
        host("excluded"),
    ]
    ranked = rank(hosts, model="m", max_latency_ms=500, max_price_per_token_wei=1000,
                  exclude={"EXCLUDED"})
    assert [c.address for c in ranked] == ["ok", "unmeasured"]


def test_no_usable_host_gives_an_empty_ranking():
    assert rank([host("a", model="x")], model="m") == []


def test_the_chain_can_vouch_for_a_stranger_but_never_outweigh_three_jobs_of_our_own():
    stranger = host("stranger", chain_good=2.0)  # the most the chain can vouch for
    known = host("known", good=3)
    unknown = host("unknown")
    assert unknown.reputation < stranger.reputation < known.reputation


def test_a_host_priced_as_an_outlier_is_never_ranked_whatever_the_limits():
    # The lower median is 150: above 1500 is an outlier, however good its record.
    hosts = [host("honest", price=100), host("dearer", price=150),
             host("absurd", price=1501, good=50)]
    assert [c.address for c in rank(hosts, model="m")] == ["honest", "dearer"]
    # Alone with one honest host: the lower median is the honest price.
    assert [c.address for c in rank([host("honest"), host("absurd", price=10**27)],
                                    model="m")] == ["honest"]
