"""The operations screens in Django admin: dead letters replayed, the processor's rows
and users' statistics shown."""

import pytest
from django.utils import timezone

from accounts.services import user_create
from marketplace.models import (
    DeadLetter,
    DeliveryState,
    JobProcessing,
    ProcessingState,
    WebhookDelivery,
)
from tests.ops.test_processor import finished_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    user = user_create(username="operator", password="a-long-password-4")
    user.is_staff = user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


def test_replaying_dead_letters_makes_their_work_due_again(operator, alice):
    job = finished_job(alice)
    JobProcessing.objects.create(job=job, state=ProcessingState.FAILED, attempts=9,
                                 last_error="chain unavailable")
    delivery = WebhookDelivery.objects.create(
        url="http://127.0.0.1:1/hook", event="job.completed", payload={}, secret="s",
        idempotency_key="job.completed:x:1", state=DeliveryState.FAILED, attempts=6)
    letters = [
        DeadLetter.objects.create(task="marketplace.tasks.process_job", args=[str(job.id)],
                                  error="ProcessingDeferred: chain unavailable"),
        DeadLetter.objects.create(task="marketplace.tasks.deliver_webhook",
                                  args=[str(delivery.id)], error="gave up after 6 attempts"),
    ]
    response = operator.post("/admin/marketplace/deadletter/", {
        "action": "replay", "_selected_action": [letter.pk for letter in letters]},
        follow=True)
    assert response.status_code == 200
    assert "2 tasks sent again" in response.content.decode()
    assert not DeadLetter.objects.filter(resolved=False).exists()
    row = JobProcessing.objects.get(pk=job.id)
    assert row.state == ProcessingState.PENDING and row.next_attempt_at <= timezone.now()
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.PENDING
    again = operator.post("/admin/marketplace/deadletter/", {
        "action": "replay", "_selected_action": [letters[0].pk]}, follow=True)
    assert "0 tasks sent again; 1 were already replayed" in again.content.decode()


@pytest.mark.parametrize("page", ["jobprocessing", "usagestats", "webhookendpoint",
                                  "deadletter"])
def test_the_operations_pages_list_their_rows(operator, alice, page):
    job = finished_job(alice)
    JobProcessing.objects.create(job=job)
    response = operator.get(f"/admin/marketplace/{page}/")
    assert response.status_code == 200
