"""Every place that shows an amount to a person shows the same figure, made by
accounts.money: the writer's estimator, result and history, the usage page, the account
page, Django admin, the Discord bot's replies and the /v1 and /api schemas' words. The JSON
answers (the exports) keep the exact wei."""

import re

import pytest
from django.template.loader import render_to_string

from accounts import money
from accounts.selectors import ledger_for_account
from accounts.services import account_get_or_create
from content.models import Status
from dashboards import selectors as usage
from discordbot.bot import cost_line, settings_view
from discordbot.jobs import Answer
from discordbot.models import DiscordServer
from marketplace.models import Job
from tests.dashboards.test_views import job_for
from writer.models import Generation

pytestmark = pytest.mark.django_db

AMOUNT = 105_600_000_123_456  # ≈ 0.0001056 ETH: a figure that must be rounded to be read
PRICE = 105_600_000_000  # 105.6 gwei a token
SHOWN = str(money.coin_html(AMOUNT))


def visible(html: str) -> str:
    """The text a reader sees: no tags, so no attributes (a title shows only on hover)."""
    return re.sub(r"<[^>]*>", " ", html)


def no_wei_shown(html: str) -> bool:
    return not re.search(r"\d wei\b", visible(html))


def a_generation(user, cost=AMOUNT) -> Generation:
    return Generation.objects.create(
        user=user, content_type="blog", style="casual", length="short", prompt="A prompt",
        full_prompt="A prompt", model="smollm2-135m-instruct", max_tokens=64,
        temperature=0.0, status=Status.DONE, text="Some text.", tokens=12, cost_wei=cost)


def test_the_writer_pages_show_the_figure_with_the_wei_on_hover(alice_client, alice):
    generation = a_generation(alice)
    for url in ("/history/", f"/g/{generation.id}/"):
        html = alice_client.get(url).content.decode()
        assert SHOWN in html, url
        assert no_wei_shown(html), url


def test_the_estimator_shows_the_worst_case_as_an_amount_and_prices_in_gwei():
    html = render_to_string("writer/_estimate.html", {"estimate": {
        "available": True, "cost_wei": AMOUNT, "seconds": 2, "model": "m", "nodes": 1,
        "max_tokens": 64}})
    assert f"Up to {SHOWN}" in html and no_wei_shown(html)
    html = render_to_string("writer/_estimate.html", {"estimate": {
        "available": False, "above_ceiling": True, "model": "m", "ceiling_wei": PRICE - 1,
        "cheapest_wei": PRICE}})
    assert str(money.price_html(PRICE - 1)) in html and str(money.price_html(PRICE)) in html
    assert "105.599999999 gwei" in visible(html) and "105.6 gwei" in visible(html)
    assert no_wei_shown(html)


def test_the_usage_and_account_pages_show_the_same_figures(alice_client, alice):
    job_for(alice, tokens=40)
    charged = usage.usage_totals(user=alice).charged_wei
    html = alice_client.get("/usage/").content.decode()
    assert str(money.coin_html(charged)) in html and no_wei_shown(html)
    account = account_get_or_create(alice)
    account.refresh_from_db()
    html = alice_client.get("/account/").content.decode()
    assert str(money.coin_html(account.balance_wei)) in html
    for entry in ledger_for_account(account=account, limit=50):
        assert str(money.coin_html(entry.amount_wei)) in html
    assert no_wei_shown(html)


def test_django_admin_shows_the_same_figures(admin_client, alice):
    generation = a_generation(alice)
    job = job_for(alice, tokens=40)
    account = account_get_or_create(alice)
    account.refresh_from_db()
    pages = {
        "/admin/writer/generation/": [AMOUNT],
        f"/admin/writer/generation/{generation.id}/change/": [AMOUNT],
        "/admin/accounts/account/": [account.balance_wei, account.held_wei],
        f"/admin/accounts/account/{account.pk}/change/": [account.balance_wei],
        "/admin/accounts/ledgerentry/": [e.amount_wei for e in account.entries.all()],
        "/admin/marketplace/job/": [Job.objects.get(pk=job.pk).paid_wei],
    }
    for url, amounts in pages.items():
        html = admin_client.get(url).content.decode()
        for wei in amounts:
            assert str(money.coin_html(wei)) in html, (url, wei)


def test_the_bot_replies_with_the_same_figures(alice):
    answer = Answer(job_id=None, parts=[], text="", tokens=12, cost_wei=AMOUNT, model="m",
                    host="")
    assert cost_line(answer) == f"-# {money.coin_text(AMOUNT)} · 12 tokens · m"
    server = DiscordServer.objects.create(guild_id=1, name="s", daily_cap_wei=AMOUNT,
                                          max_price_per_token_wei=PRICE)
    view = settings_view(server)
    assert f"Daily cap: {money.coin_text(AMOUNT)} (0 ETH used today)" in view
    assert "Max price per token: 105.6 gwei" in view
    assert not re.search(r"\d wei\b", view)


def _wei_descriptions(schema: dict, *, streamed: bool = True) -> list[str]:
    """The descriptions of every wei field; `streamed`: with those of the streamed events'
    schema, which is written when the module loads (so it has the symbol the process
    started with)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("pattern") == "^[0-9]+$":
                found.append(node.get("description", ""))
            for key, value in node.items():
                if streamed or key != "contentSchema":
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return found


@pytest.mark.parametrize("symbol", ["ETH", "xDAI"])
def test_the_api_schemas_describe_wei_in_the_same_words(client, alice_client, settings,
                                                        symbol):
    settings.MONEY_SYMBOL = symbol
    for url, schema in (("/v1/openapi.json", client.get("/v1/openapi.json").json()),
                        ("/api/openapi.json", alice_client.get("/api/openapi.json").json())):
        described = _wei_descriptions(schema, streamed=symbol == "ETH")
        assert len(described) >= 3, url
        for text in described:
            assert text.endswith(money.wei_schema_description()), (url, text)
            assert f"1 {symbol} = 10^18 wei" in text


def test_the_json_answers_keep_the_exact_wei(alice_client, alice):
    a_generation(alice)
    (item,) = alice_client.get("/api/history").json()
    assert item["cost"] == str(AMOUNT)
