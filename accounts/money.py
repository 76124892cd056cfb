"""How amounts of wei are shown to people, in one place: pages, admin, the Discord bot and
the /v1 schema's descriptions all call these functions, so they agree.

Amounts are shown in the chain's native coin (settings.MONEY_SYMBOL, "ETH" by default) and
prices per token in gwei (10^9 wei). A figure is exact when it fits the precision; else it
is rounded half up and marked "≈", so a rounded figure is never passed off as exact and
no amount above zero is ever shown as zero (rounding keeps significant digits, not only
places). The exact wei goes on hover (`money_html`'s title) and into every export.
Integer arithmetic throughout: no float ever touches money.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from django.conf import settings
from django.utils.html import format_html
from django.utils.safestring import SafeString
from pydantic import Field

WEI_PER_ETH = 10**18
WEI_PER_GWEI = 10**9

# Decimal places a coin amount keeps (0.000001 ETH is well below a cent at any price seen
# so far), and significant digits kept for amounts smaller than that. A price per token
# keeps all nine places of a gwei: always exact, so a ceiling just under a host's price
# never reads as the same figure.
COIN_PLACES = 6
PRICE_PLACES = 9
SIGNIFICANT = 4
APPROX = "≈ "


def symbol() -> str:
    """The native coin's symbol on this deployment's chain (MONEY_SYMBOL)."""
    return settings.MONEY_SYMBOL


@dataclass(frozen=True)
class Amount:
    wei: int
    number: str  # "1,234.5", "≈ 0.0001235"
    unit: str  # "ETH", "gwei"
    exact: bool

    @property
    def text(self) -> str:
        return f"{self.number} {self.unit}"

    @property
    def wei_text(self) -> str:
        return f"{self.wei:,} wei"


def _decimal(wei: int, scale: int, places: int) -> tuple[str, bool]:
    """`wei / scale` written in decimal: exact when it needs at most `places` decimals (or
    `SIGNIFICANT` significant digits, if more), else rounded half up to that."""
    sign = "-" if wei < 0 else ""
    magnitude = abs(wei)
    digits = len(str(scale)) - 1  # decimals that can ever be needed
    whole, frac = divmod(magnitude, scale)
    frac_text = f"{frac:0{digits}d}".rstrip("0")
    if whole == 0 and frac:
        leading_zeros = len(frac_text) - len(frac_text.lstrip("0"))
        places = max(places, leading_zeros + SIGNIFICANT)
    if len(frac_text) <= places:
        exact = True
    else:
        exact = False
        kept, rest = divmod(magnitude * 10**places, scale)
        if 2 * rest >= scale:
            kept += 1
        whole, frac = divmod(kept, 10**places)
        frac_text = f"{frac:0{places}d}".rstrip("0") if places else ""
    number = f"{sign}{whole:,}" + (f".{frac_text}" if frac_text else "")
    return (number if exact else APPROX + number), exact


def _whole(wei) -> int:
    if isinstance(wei, bool):
        raise TypeError("an amount of wei is an int, not a bool")
    if isinstance(wei, str):
        wei = wei.strip()
    return int(wei)


def coin(wei) -> Amount:
    """An amount (a balance, a charge, a payout) in the native coin."""
    wei = _whole(wei)
    number, exact = _decimal(wei, WEI_PER_ETH, COIN_PLACES)
    return Amount(wei=wei, number=number, unit=symbol(), exact=exact)


def price(wei_per_token) -> Amount:
    """A price per token, in gwei."""
    wei = _whole(wei_per_token)
    number, exact = _decimal(wei, WEI_PER_GWEI, PRICE_PLACES)
    return Amount(wei=wei, number=number, unit="gwei", exact=exact)


def coin_text(wei) -> str:
    """Plain text ("0.0001056 ETH"): the bot, chart labels, messages."""
    return coin(wei).text


def coin_detail(wei) -> str:
    """Plain text for a message that compares amounts: the exact wei follows a rounded
    figure, so two amounts that round alike still read apart."""
    amount = coin(wei)
    return amount.text if amount.exact else f"{amount.text} ({amount.wei_text})"


def price_text(wei_per_token) -> str:
    """Plain text for a price per token ("105.6 gwei")."""
    return price(wei_per_token).text


def money_html(amount: Amount) -> SafeString:
    """The figure, with the exact wei on hover."""
    return format_html('<span class="money" title="{}">{}</span>', amount.wei_text, amount.text)


def coin_html(wei) -> SafeString:
    return money_html(coin(wei))


def price_html(wei_per_token) -> SafeString:
    return money_html(price(wei_per_token))


# ---- reading amounts people type -----------------------------------------------------------

_AMOUNT = re.compile(r"^\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


class AmountError(ValueError):
    pass


def parse(text: str, *, default_unit: str = "wei") -> int:
    """An amount someone typed ("0.001 ETH", "105.6 gwei", "1000 wei", "1000") as wei.
    A figure with no unit is in `default_unit`. A fraction of a wei is refused, never
    rounded."""
    match = _AMOUNT.match(text or "")
    if not match:
        raise AmountError(f"not an amount: {text!r}")
    figure, unit = match.group(1).replace(",", "").replace("_", ""), match.group(2)
    scales = {"wei": 1, "gwei": WEI_PER_GWEI, symbol().lower(): WEI_PER_ETH}
    scale = scales.get((unit or default_unit).lower())
    if scale is None:
        raise AmountError(f"unknown unit {unit!r}: use wei, gwei or {symbol()}")
    whole, _, frac = figure.partition(".")
    frac = frac.rstrip("0")
    places = len(str(scale)) - 1
    if len(frac) > places:
        raise AmountError(f"{text.strip()} is not a whole number of wei")
    return int(whole) * scale + (int(frac) * 10 ** (places - len(frac)) if frac else 0)


# ---- the words the /v1 schema uses -------------------------------------------------------


def wei_schema_description(what: str = "") -> str:
    """The description of a wei field in the OpenAPI schema."""
    lead = f"{what.rstrip('. ')}: " if what else ""
    return (f"{lead}wei, as a decimal string (exact; a JSON number loses precision past "
            f"2^53). 1 {symbol()} = 10^18 wei; 1 gwei = 10^9 wei.")


def _wei_schema_extra(schema: dict) -> None:
    # Read when the schema is made, so MONEY_SYMBOL is the one in force; a field's own
    # description, if any, leads.
    schema["description"] = wei_schema_description(schema.get("description") or "")


# An amount of wei in a JSON API: a decimal string, exact past 2^53.
WeiText = Annotated[str, Field(pattern=r"^[0-9]+$", json_schema_extra=_wei_schema_extra)]


# ---- Django admin ---------------------------------------------------------------------------


def admin_column(field: str, description: str, *, per_token: bool = False):
    """A ModelAdmin method showing the wei in `field` as an amount (or, `per_token`, a
    price), exact wei on hover; put it on the ModelAdmin and name it in list_display or
    readonly_fields."""
    from django.contrib import admin

    show = price_html if per_token else coin_html

    @admin.display(description=description, ordering=field)
    def column(model_admin, obj):
        value = getattr(obj, field)
        return "—" if value is None else show(value)

    return column
