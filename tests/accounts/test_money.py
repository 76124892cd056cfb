"""How amounts are shown: exact when they fit, rounded and marked "≈" when not, never a
wrong figure; the exact wei on hover; the coin's symbol from the settings."""

from decimal import Decimal, localcontext

import pytest
from django.template import Context, Template
from hypothesis import given
from hypothesis import strategies as st

from accounts import money

ETH = 10**18


def shown_value(amount: money.Amount, scale: int) -> Decimal:
    number = amount.number.removeprefix(money.APPROX).replace(",", "")
    with localcontext() as ctx:
        ctx.prec = 200
        return Decimal(number) * scale


@pytest.mark.parametrize(("wei", "text"), [
    (0, "0 ETH"),
    (ETH, "1 ETH"),
    (10**15, "0.001 ETH"),
    (105_600_000_000 * 1000, "0.0001056 ETH"),
    (1, "0.000000000000000001 ETH"),  # exact: a single wei is still four digits or fewer
    (1_234_567 * ETH, "1,234,567 ETH"),
    (-5 * 10**17, "-0.5 ETH"),
    (1_234_567_891_234_567_891, "≈ 1.234568 ETH"),
    (999_999_999_999_999_999, "≈ 1 ETH"),
    (123_456_789, "≈ 0.0000000001235 ETH"),
])
def test_an_amount_is_exact_when_it_fits_and_marked_when_rounded(wei, text):
    assert money.coin_text(wei) == text
    assert money.coin(wei).exact == (not text.startswith("≈"))


@pytest.mark.parametrize(("wei", "text"), [
    (105_600_000_000, "105.6 gwei"),
    (10**9, "1 gwei"),
    (1, "0.000000001 gwei"),
    (3 * 10**9 + 1, "3.000000001 gwei"),
    (10**9 - 1, "0.999999999 gwei"),  # a ceiling just under 1 gwei never reads as 1 gwei
    (12_345_678_901, "12.345678901 gwei"),
    (10**30, "1,000,000,000,000,000,000,000 gwei"),
])
def test_a_price_per_token_is_in_gwei_and_exact(wei, text):
    assert money.price_text(wei) == text
    assert money.price(wei).exact


def test_a_message_that_compares_amounts_gives_the_wei_of_a_rounded_one():
    assert money.coin_detail(10**15) == "0.001 ETH"
    assert money.coin_detail(10**15 + 1) == "≈ 0.001 ETH (1,000,000,000,000,001 wei)"


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_a_shown_amount_is_never_wrong(wei):
    """Exact figures are the amount to the wei; rounded ones are off by at most half of
    their last digit, and an amount above zero never shows as zero."""
    for amount, scale in ((money.coin(wei), ETH), (money.price(wei), 10**9)):
        value = shown_value(amount, scale)
        if amount.exact:
            assert value == wei
            assert money.parse(amount.text.lstrip("-")) == abs(wei)
        else:
            assert amount.number.startswith(money.APPROX)
            places = len(amount.number.partition(".")[2])
            assert abs(value - wei) * 2 <= Decimal(scale) / 10**places
        if wei != 0:
            assert value != 0


def test_the_exact_wei_is_on_hover():
    html = str(money.coin_html(105_600_000_000_123))
    assert html == ('<span class="money" title="105,600,000,000,123 wei">'
                    '≈ 0.0001056 ETH</span>')
    rendered = Template("{% load money %}{{ a|eth }} {{ p|gwei }} [{{ none|eth }}]").render(
        Context({"a": 10**15, "p": 105_600_000_000, "none": None}))
    assert rendered == ('<span class="money" title="1,000,000,000,000,000 wei">0.001 ETH</span> '
                        '<span class="money" title="105,600,000,000 wei">105.6 gwei</span> []')


def test_the_coin_symbol_is_a_setting(settings):
    settings.MONEY_SYMBOL = "xDAI"
    assert money.coin_text(2 * ETH) == "2 xDAI"
    assert money.parse("0.5 xDAI") == ETH // 2
    assert "1 xDAI = 10^18 wei" in money.wei_schema_description()
    with pytest.raises(money.AmountError, match="use wei, gwei or xDAI"):
        money.parse("1 ETH")
    settings.MONEY_SYMBOL = "<b>"
    assert "&lt;b&gt;" in str(money.coin_html(1))  # a symbol is text, never markup


@pytest.mark.parametrize(("typed", "wei"), [
    ("0.001 ETH", 10**15), ("0.001 eth", 10**15), ("2 gwei", 2 * 10**9),
    ("105.6gwei", 105_600_000_000), ("1,000 wei", 1000), ("1000", 1000),
    ("0.000000001 gwei", 1),
])
def test_typed_amounts_are_read_to_the_wei(typed, wei):
    assert money.parse(typed) == wei


@pytest.mark.parametrize("typed", ["", "abc", "1.5 wei", "0.0000000001 gwei", "1e18",
                                   "-1 ETH", "1 BTC", "1 ETH extra", "0x10"])
def test_anything_else_is_refused_never_rounded(typed):
    with pytest.raises(money.AmountError):
        money.parse(typed)


def test_a_bool_is_not_an_amount():
    with pytest.raises(TypeError):
        money.coin(True)
