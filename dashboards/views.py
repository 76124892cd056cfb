"""The usage pages: a user's own, and the staff's across everybody."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from eth_utils import is_checksum_address, is_hex_address, to_checksum_address

from accounts import money
from dashboards import selectors
from dashboards.charts import bar_chart
from marketplace.chain.errors import ChainError
from marketplace.earnings import host_earnings_read
from marketplace.metrics import success_summary
from observability.metrics import celery_queue_length


def _charts(days: list[selectors.DayUsage], *, with_paid: bool = False) -> dict:
    def when(d):
        return d.day.strftime("%b %d")

    charts = {
        "jobs": bar_chart([(when(d), d.jobs) for d in days], title="Jobs per day"),
        "tokens": bar_chart([(when(d), d.tokens) for d in days], title="Tokens per day",
                            label=lambda v: f"{int(v):,} tokens"),
        "cost": bar_chart([(when(d), d.charged_wei) for d in days], title="Cost per day",
                          label=lambda v: money.coin_text(int(v))),
    }
    if with_paid:
        charts["paid"] = bar_chart([(when(d), d.paid_wei) for d in days],
                                   title="Paid on chain per day",
                                   label=lambda v: money.coin_text(int(v)))
    return charts


def _active(days: list[selectors.DayUsage]) -> list[selectors.DayUsage]:
    """The table's rows: days with something in them, newest first."""
    return [d for d in reversed(days) if d.jobs or d.charged_wei]


@login_required
def usage(request):
    days = selectors.usage_by_day(user=request.user)
    return render(request, "dashboards/usage.html", {
        "days": _active(days), "charts": _charts(days),
        "totals": selectors.usage_totals(user=request.user), "span": selectors.DAYS,
    })


@staff_member_required
def staff_usage(request):
    days = selectors.usage_by_day()
    return render(request, "dashboards/staff.html", {
        "days": _active(days), "charts": _charts(days, with_paid=True),
        "totals": selectors.usage_totals(), "span": selectors.DAYS,
        "top": selectors.top_users(), "states": selectors.jobs_by_state(),
        "work": selectors.background_work(), "summary": success_summary(),
        "queue": celery_queue_length(), "gateway": selectors.gateway_by_endpoint(),
        "gateway_chart": bar_chart(
            [(d.strftime("%b %d"), n) for d, n in selectors.gateway_requests_by_day()],
            title="API requests per day"),
    })


def _is_address(text: str) -> bool:
    if not is_hex_address(text) or not text.startswith("0x"):
        return False
    digits = text[2:]
    # Mixed case is a checksum (EIP-55); a wrong one is a typo, never another address.
    return digits in (digits.lower(), digits.upper()) or is_checksum_address(text)


@login_required
def host_earnings(request):
    """A host's earnings, from the chain's events (public data: any address may be
    looked up)."""
    address = (request.GET.get("address") or "").strip()
    context = {"address": address, "earnings": None, "days": [], "error": None}
    if not address:
        return render(request, "dashboards/host.html", context)
    if not _is_address(address):
        context["error"] = {"code": "INVALID_ADDRESS",
                            "message": "That is not an address: 0x and 40 hex digits, and a "
                                       "mixed-case one must match its checksum (EIP-55)."}
        return render(request, "dashboards/host.html", context, status=400)
    context["address"] = to_checksum_address(address)
    try:
        earnings = async_to_sync(host_earnings_read)(context["address"])
    except ChainError as exc:
        context["error"] = {"code": "CHAIN_UNAVAILABLE",
                            "message": "The chain cannot be read right now; try again in a "
                                       f"minute ({exc.code})."}
        return render(request, "dashboards/host.html", context, status=503)
    context.update(earnings=earnings, days=list(reversed(earnings.days)))
    return render(request, "dashboards/host.html", context)
