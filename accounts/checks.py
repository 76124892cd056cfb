"""Start-up checks: a bad tier or fee setting stops the server instead of mispricing."""

from __future__ import annotations

from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured


@register()
def check_billing_settings(app_configs, **kwargs):
    from accounts.tiers import Tier, platform_fee_bps, tier_policy

    errors = []
    for tier in Tier.values:
        try:
            tier_policy(tier)
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc), id="accounts.E001"))
    try:
        platform_fee_bps()
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="accounts.E002"))
    return errors
