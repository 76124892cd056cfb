"""Batches in Django admin: the lists and a batch's page show state and progress, never
the webhook secret; failed items can be run again, with their batch running again."""

from __future__ import annotations

import pytest
from django.urls import reverse

from gateway import batch as batch_services
from gateway.batch import ItemRequest
from gateway.models import BatchItem, BatchState, ItemState
from tests.conftest import MODEL
from tests.gateway.batchkit import purge_broker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_queued_tasks():
    yield
    purge_broker()


@pytest.fixture
def staff(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-12345")
    client.force_login(admin)
    return client


@pytest.fixture
def failed_batch(alice):
    batch = batch_services.batch_create(
        api_key=alice.key, webhook_url="http://127.0.0.1:9/hook",
        requests=[ItemRequest(model=MODEL, prompt=f"Item {i}", max_tokens=4, temperature=0.0)
                  for i in range(2)]).batch
    for item in batch.items.all():
        batch_services.batch_item_claim(item_id=item.pk)
        batch_services.batch_item_fail(item_id=item.pk, code="NO_HOSTS_AVAILABLE",
                                       message="gave up", dead_letter=True)
    batch.refresh_from_db()
    assert batch.state == BatchState.COMPLETED and batch.failed == 2
    return batch


def test_the_batch_pages_show_state_and_progress_but_not_the_secret(staff, failed_batch):
    listing = staff.get(reverse("admin:gateway_batch_changelist"))
    assert listing.status_code == 200
    assert "2/2" in listing.text and "completed" in listing.text.lower()
    page = staff.get(reverse("admin:gateway_batch_change", args=[failed_batch.pk]))
    assert page.status_code == 200
    assert "NO_HOSTS_AVAILABLE" in page.text  # the items, inline
    assert failed_batch.webhook_secret not in page.text
    items = staff.get(reverse("admin:gateway_batchitem_changelist") + "?state=failed")
    assert items.status_code == 200 and "NO_HOSTS_AVAILABLE" in items.text


def test_failed_items_run_again_from_the_admin_with_fresh_attempts(staff, failed_batch):
    ids = list(failed_batch.items.values_list("pk", flat=True))
    response = staff.post(reverse("admin:gateway_batchitem_changelist"),
                          {"action": "retry_now", "_selected_action": ids}, follow=True)
    assert response.status_code == 200 and "2 items queued again" in response.text
    assert set(BatchItem.objects.filter(pk__in=ids).values_list("state", "attempts")) == {
        (ItemState.QUEUED, 0)}
    failed_batch.refresh_from_db()
    assert (failed_batch.state, failed_batch.failed, failed_batch.finished_at) == (
        BatchState.RUNNING, 0, None)
