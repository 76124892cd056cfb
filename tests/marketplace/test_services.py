"""What the products call to price a job: the reservation is the price of the hosts a job
would really use (marketplace.services.PriceQuote; docs/trust.md, "Prices")."""

from __future__ import annotations

import statistics

import pytest

from marketplace.services import (
    MAX_PRICE_CEILING_WEI,
    OUTLIER_FACTOR,
    PriceQuote,
    price_ceiling_parse,
)


def quote(*prices: int) -> PriceQuote:
    ordered = sorted(prices)
    return PriceQuote(model="m", nodes=len(ordered), min_price_wei=ordered[0],
                      median_price_wei=statistics.median_low(ordered),
                      max_price_wei=ordered[-1], ttft_ms=None, tokens_per_s=None,
                      prices=tuple(ordered))


def test_a_job_reserves_at_the_dearest_host_it_would_use():
    assert quote(100, 150, 200).reserve_price_wei() == 200


def test_a_host_asking_more_than_ten_times_the_median_is_never_reserved_for():
    absurd = 10**18
    assert quote(100, 200, absurd).reserve_price_wei() == 200
    # Even beside a single honest host: the lower median is a price a host really asks.
    assert quote(100, absurd).reserve_price_wei() == 100
    assert quote(100, OUTLIER_FACTOR * 100).reserve_price_wei() == OUTLIER_FACTOR * 100
    assert quote(100, OUTLIER_FACTOR * 100 + 1).reserve_price_wei() == 100


def test_the_users_ceiling_leaves_out_dearer_hosts():
    assert quote(100, 150, 200).reserve_price_wei(150) == 150
    assert quote(100, 150, 200).used_prices(120) == [100]


def test_a_ceiling_below_every_host_leaves_nothing_to_reserve():
    assert quote(100, 150).reserve_price_wei(99) is None


@pytest.mark.parametrize(("given", "parsed"), [
    (None, None), ("1", 1), ("2000", 2000), (5, 5),
    (str(MAX_PRICE_CEILING_WEI), MAX_PRICE_CEILING_WEI)])
def test_a_ceiling_is_a_positive_whole_number_of_wei(given, parsed):
    assert price_ceiling_parse(given) == parsed


@pytest.mark.parametrize("given", [
    "", " 5", "007", "0", "-5", "1.5", "1e9", "abc", "0x10", str(MAX_PRICE_CEILING_WEI + 1),
    0, -1, True, 1.0, MAX_PRICE_CEILING_WEI + 1, [1]])
def test_anything_else_is_refused_in_words(given):
    with pytest.raises(ValueError, match="max_price_per_token must be a whole number of wei"):
        price_ceiling_parse(given)
