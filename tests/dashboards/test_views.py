"""The usage pages: each user sees their own jobs, tokens and cost per day; staff see
everybody's and the state of the background work."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.services import (
    account_get_or_create,
    balance_reserve,
    reservation_settle,
    user_create,
)
from accounts.tiers import settlement_for
from dashboards.charts import bar_chart
from gateway.models import GatewayRequest, RequestStatus
from marketplace import processor
from marketplace.jobs import job_create
from marketplace.models import DeadLetter, Job, JobState

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(db):
    return user_create(username="alice", password="a-long-password-1")


@pytest.fixture
def bob(db):
    return user_create(username="bob", password="a-long-password-2")


@pytest.fixture
def charlie(db):
    return user_create(username="charlie", password="a-long-password-3")


def job_for(user, *, tokens: int, days_ago: int = 0, failed: bool = False) -> Job:
    """A finished job, charged through the ledger as the writer charges it, and processed."""
    job = job_create(model="m", prompt="p", max_tokens=64, temperature=0.0, owner_id=user.pk)
    when = timezone.now() - timedelta(days=days_ago)
    Job.objects.filter(pk=job.pk).update(
        state=JobState.FAILED if failed else JobState.COMPLETED, tokens=tokens,
        paid_wei=tokens * 10**9, created=when, finished_at=when)
    if not failed:
        account = account_get_or_create(user)
        reservation = balance_reserve(account, amount_wei=10**14, reference=f"test:{job.pk}")
        split = settlement_for(account.tier, 10**9, tokens, protocol_fee_bps=250)
        reservation_settle(reservation, **split._asdict())
    processor.job_finished(job_id=job.pk)
    processor.job_process(job_id=str(job.pk))
    return job


def figure(html: str, element_id: str) -> str:
    return re.search(rf'id="{element_id}">([^<]*)<', html).group(1)


def test_the_usage_page_asks_for_a_login(client):
    response = client.get("/usage/")
    assert response.status_code == 302
    assert "/account/login/" in response["Location"]


def test_a_user_sees_their_own_usage_and_nobody_elses(client, alice, bob, charlie):
    job_for(alice, tokens=40)
    job_for(alice, tokens=60, days_ago=1)
    job_for(alice, tokens=0, failed=True)
    job_for(bob, tokens=999)
    client.force_login(alice)
    html = client.get("/usage/").content.decode()
    assert figure(html, "total-jobs") == "3"
    assert figure(html, "total-tokens") == "100"
    charged = settlement_for("free", 10**9, 40, protocol_fee_bps=250).charged_wei + \
        settlement_for("free", 10**9, 60, protocol_fee_bps=250).charged_wei
    assert f"{charged:,} wei" in html
    assert "999" not in html
    assert html.count('class="chart"') == 3
    client.force_login(charlie)
    html = client.get("/usage/").content.decode()
    assert figure(html, "total-jobs") == "0"
    assert "Nothing in the last 30 days." in html


def test_the_charts_have_a_bar_a_day_with_the_exact_figure(client, alice):
    job_for(alice, tokens=25, days_ago=2)
    client.force_login(alice)
    html = client.get("/usage/").content.decode()
    tokens_chart = html.split("<h2>Tokens per day</h2>")[1].split("</svg>")[0]
    assert tokens_chart.count("<rect") == 30
    day = (timezone.localdate() - timedelta(days=2)).strftime("%b %d")
    assert f"<title>{day}: 25 tokens</title>" in tokens_chart


def test_a_chart_escapes_what_it_is_given():
    svg = bar_chart([("<script>", 3)], title='a "title" & more')
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg and "&quot;title&quot; &amp; more" in svg


def test_the_staff_page_is_for_staff_only(client, alice):
    client.force_login(alice)
    assert client.get("/usage/all/").status_code == 302
    assert 'href="/usage/all/"' not in client.get("/usage/").content.decode()


def test_staff_see_every_user_and_the_background_work(client, alice, bob):
    job_for(alice, tokens=40)
    job_for(bob, tokens=90)
    job_for(bob, tokens=0, failed=True)
    DeadLetter.objects.create(task="marketplace.tasks.process_job", args=["x"], error="boom")
    staff = user_create(username="operator", password="a-long-password-4")
    staff.is_staff = True
    staff.save()
    client.force_login(staff)
    html = client.get("/usage/all/").content.decode()
    assert figure(html, "total-jobs") == "3"
    assert figure(html, "dead-letters") == "1 dead letter"
    top = html.split('class="table top-users"')[1].split("</table>")[0]
    assert top.index("bob") < top.index("alice")  # most tokens first
    assert html.count('class="chart"') == 5
    assert 'href="/usage/all/"' in html
    assert figure(html, "summary") == "degraded"  # 2 of 3 completed in the last hour


def test_staff_see_the_gateways_requests_per_endpoint(client, alice):
    for status, cached, ms in ((RequestStatus.DONE, False, 900.0),
                               (RequestStatus.DONE, True, 5.0),
                               (RequestStatus.FAILED, False, 100.0)):
        GatewayRequest.objects.create(user=alice, endpoint="inference", model="m",
                                      status=status, cached=cached, tokens=10,
                                      duration_ms=ms)
    GatewayRequest.objects.create(user=alice, endpoint="chat", model="m", tokens=3)
    staff = user_create(username="operator", password="a-long-password-4")
    staff.is_staff = True
    staff.save()
    client.force_login(staff)
    html = client.get("/usage/all/").content.decode()
    table = html.split('class="table gateway-endpoints"')[1].split("</table>")[0]
    rows = re.findall(r"<tr><td>(\w+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>"
                      r"<td>(\d+)</td><td>([^<]*)</td></tr>", table)
    assert rows == [("inference", "3", "1", "1", "30", "335.0 ms"),
                    ("chat", "1", "0", "0", "3", "")]
    chart = html.split("<h2>API requests per day</h2>")[1].split("</svg>")[0]
    assert f"<title>{timezone.localdate().strftime('%b %d')}: 4</title>" in chart
