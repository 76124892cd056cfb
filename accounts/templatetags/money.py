"""Template filters for amounts of wei; the formatting itself is accounts.money's."""

from django import template

from accounts import money

register = template.Library()


@register.filter
def eth(wei):
    """An amount of wei in the native coin, the exact wei on hover."""
    if wei is None or wei == "":
        return ""
    return money.coin_html(wei)


@register.filter
def gwei(wei_per_token):
    """A price per token in gwei, the exact wei on hover."""
    if wei_per_token is None or wei_per_token == "":
        return ""
    return money.price_html(wei_per_token)
