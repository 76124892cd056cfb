"""Tiers and prices: who may send how much, and what it costs them, in exact integers.

Multipliers and fees are basis points (1/10,000), so every price is integer arithmetic
on wei: no float ever touches money.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

BPS = 10_000


class Tier(models.TextChoices):
    FREE = "free", "Free"
    BASIC = "basic", "Basic"
    PREMIUM = "premium", "Premium"


@dataclass(frozen=True)
class TierPolicy:
    tier: str
    requests_per_minute: int
    multiplier_bps: int


class Price(NamedTuple):
    """What a request costs the user, and where it goes.

    charge_wei = host_cost_wei + platform_fee_wei, exactly. host_cost_wei is what the
    platform pays into escrow (the node's price × tokens; the chain splits it into the
    host's payout and the protocol fee). platform_fee_wei is everything the platform
    keeps: the tier's markup plus the platform fee on the marked-up price.
    """

    charge_wei: int
    platform_fee_wei: int
    host_cost_wei: int


class Settlement(NamedTuple):
    """The arguments of reservation_settle for a finished request."""

    charged_wei: int
    host_payout_wei: int
    protocol_fee_wei: int
    platform_fee_wei: int


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ImproperlyConfigured(f"{name} must be a non-negative integer, got {value!r}")
    return value


def tier_policy(tier: str) -> TierPolicy:
    """The limits and multiplier of `tier`, from settings.ACCOUNTS_TIERS."""
    tiers = settings.ACCOUNTS_TIERS
    if tier not in tiers:
        raise ImproperlyConfigured(f"ACCOUNTS_TIERS has no tier {tier!r}")
    entry = tiers[tier]
    rpm = _positive_int(entry.get("requests_per_minute"),
                        f"ACCOUNTS_TIERS[{tier!r}]['requests_per_minute']")
    multiplier = _positive_int(entry.get("multiplier_bps"),
                               f"ACCOUNTS_TIERS[{tier!r}]['multiplier_bps']")
    if multiplier < BPS:
        # Below 1.0 the platform would pay the host more than it charges the user.
        raise ImproperlyConfigured(
            f"ACCOUNTS_TIERS[{tier!r}]['multiplier_bps'] must be at least {BPS}, got {multiplier}")
    return TierPolicy(tier=tier, requests_per_minute=rpm, multiplier_bps=multiplier)


def platform_fee_bps() -> int:
    return _positive_int(settings.ACCOUNTS_PLATFORM_FEE_BPS, "ACCOUNTS_PLATFORM_FEE_BPS")


def price_for(tier: str, node_price_per_token_wei: int, tokens: int) -> Price:
    """The price of `tokens` tokens at the node's price for a user of `tier`.

    host cost = node price × tokens; marked up = ceil(host cost × multiplier);
    charge = marked up + ceil(marked up × platform fee). Rounding is up, so the charge
    never falls below what the platform pays. The function is monotonic in `tokens`,
    so the price of max_tokens is a safe worst-case reservation.
    """
    if node_price_per_token_wei < 0 or tokens < 0:
        raise ValueError("price and tokens must not be negative")
    host_cost = int(node_price_per_token_wei) * int(tokens)
    marked_up = _ceil_div(host_cost * tier_policy(tier).multiplier_bps, BPS)
    charge = marked_up + _ceil_div(marked_up * platform_fee_bps(), BPS)
    return Price(charge_wei=charge, platform_fee_wei=charge - host_cost, host_cost_wei=host_cost)


def settlement_for(tier: str, node_price_per_token_wei: int, tokens: int, *,
                   protocol_fee_bps: int) -> Settlement:
    """The split of a finished request, with the protocol fee rounded down as the
    escrow contract does (fee = payment × bps / 10000), so the ledger matches the chain."""
    price = price_for(tier, node_price_per_token_wei, tokens)
    protocol_fee = price.host_cost_wei * protocol_fee_bps // BPS
    return Settlement(charged_wei=price.charge_wei,
                      host_payout_wei=price.host_cost_wei - protocol_fee,
                      protocol_fee_wei=protocol_fee,
                      platform_fee_wei=price.platform_fee_wei)
