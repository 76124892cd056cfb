import pytest
from django.core.exceptions import ImproperlyConfigured

from accounts.tiers import Price, price_for, settlement_for, tier_policy


def test_tiers_have_the_documented_limits_and_multipliers():
    assert [(tier_policy(t).requests_per_minute, tier_policy(t).multiplier_bps)
            for t in ("free", "basic", "premium")] == [(10, 20000), (100, 15000), (1000, 12000)]


@pytest.mark.parametrize("tier, charge", [("free", 240_000), ("basic", 180_000),
                                          ("premium", 144_000)])
def test_the_price_is_node_price_times_tier_multiplier_plus_twenty_percent(tier, charge):
    price = price_for(tier, 1_000, 100)
    assert price == Price(charge_wei=charge, platform_fee_wei=charge - 100_000,
                          host_cost_wei=100_000)


def test_prices_round_up_so_the_charge_never_falls_below_the_cost():
    # 7 × 13 = 91 wei; × 1.2 = 109.2 → 110; + 20 % = 22 → 132.
    assert price_for("premium", 7, 13) == Price(132, 41, 91)


def test_prices_are_exact_at_sizes_no_float_could_hold():
    price = price_for("free", 10**30 + 1, 10**6)
    host_cost = (10**30 + 1) * 10**6
    assert price.host_cost_wei == host_cost
    assert price.charge_wei == host_cost * 2 * 12 // 10
    assert price.charge_wei == price.host_cost_wei + price.platform_fee_wei


def test_a_worst_case_price_is_never_below_the_price_of_fewer_tokens():
    worst = price_for("basic", 333, 512).charge_wei
    assert all(price_for("basic", 333, n).charge_wei <= worst for n in range(513))


def test_the_settlement_rounds_the_protocol_fee_down_like_the_escrow_contract():
    split = settlement_for("premium", 7, 13, protocol_fee_bps=250)
    assert split.protocol_fee_wei == 91 * 250 // 10_000 == 2
    assert split.host_payout_wei == 89
    assert split.charged_wei == split.host_payout_wei + split.protocol_fee_wei + \
        split.platform_fee_wei == 132


def test_the_multipliers_and_fee_come_from_settings(settings):
    settings.ACCOUNTS_PLATFORM_FEE_BPS = 0
    settings.ACCOUNTS_TIERS = {**settings.ACCOUNTS_TIERS,
                               "free": {"requests_per_minute": 5, "multiplier_bps": 10_000}}
    assert price_for("free", 3, 10) == Price(30, 0, 30)


@pytest.mark.parametrize("entry", [{"requests_per_minute": 10, "multiplier_bps": 1.5},
                                   {"requests_per_minute": -1, "multiplier_bps": 20000},
                                   {"requests_per_minute": 10, "multiplier_bps": 9000},
                                   {"requests_per_minute": 10}])
def test_a_bad_tier_setting_is_refused_loudly(settings, entry):
    settings.ACCOUNTS_TIERS = {**settings.ACCOUNTS_TIERS, "free": entry}
    with pytest.raises(ImproperlyConfigured):
        tier_policy("free")


def test_the_system_check_reports_a_bad_tier_setting(settings):
    from accounts.checks import check_billing_settings

    settings.ACCOUNTS_TIERS = {"free": settings.ACCOUNTS_TIERS["free"]}
    assert [e.id for e in check_billing_settings(None)] == ["accounts.E001", "accounts.E001"]
