"""The models that moved between apps (the gateway's out of marketplace, the bot's and the
profiles out of writer) kept their tables and every row: a database filled at the
migrations from before the move is migrated forward, and each table reads back the same."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from content.models import GenerationProfile
from discordbot.models import DiscordDailySpend, DiscordJob, DiscordServer
from gateway.models import Batch, BatchItem, GatewayRequest

# The last migration of each app before the move, and the moved-to apps not yet there.
BEFORE = [("accounts", "0004_lean_indexes"), ("marketplace", "0007_lean_indexes"),
          ("writer", "0004_discord"), ("gateway", None), ("content", None),
          ("discordbot", None)]
MOVED = {"gateway": ["batch", "batchitem", "gatewayrequest"],
         "discordbot": ["discordserver", "discorddailyspend", "discordjob"],
         "content": ["generationprofile"]}


def _migrate(targets) -> object:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    executor = MigrationExecutor(connection)  # a new loader reads what is applied now
    return executor.loader.project_state(list(executor.loader.applied_migrations)).apps


def _latest():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


def _snapshot() -> dict[str, list[dict]]:
    """Every row of every table of ours, in primary-key order, column by column."""
    with connection.cursor() as cursor:
        tables = [t for t in connection.introspection.table_names(cursor)
                  if not t.startswith(("django_migrations", "django_content_type"))]
        rows = {}
        for table in tables:
            cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1')
            names = [column.name for column in cursor.description]
            rows[table] = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return rows


def _as_before(after: dict[str, list[dict]], before: dict[str, list[dict]]):
    """`after` with only the columns each table had before: later migrations may add
    columns (empty on old rows), never take a row or change a value."""
    return {table: [{c: row[c] for c in before[table][0]} for row in rows]
            if before.get(table) else rows for table, rows in after.items()}


def _fill(apps) -> None:
    User = apps.get_model("accounts", "User")
    ApiKey = apps.get_model("accounts", "ApiKey")
    alice = User.objects.create(username="alice")
    key = ApiKey.objects.create(user=alice, name="ci", prefix="ink_abcd", key_hash="0" * 64)
    Delivery = apps.get_model("marketplace", "WebhookDelivery")
    delivery = Delivery.objects.create(url="https://example.com/hook", event="batch.completed",
                                       payload={"n": 1}, secret="s", idempotency_key="k1")
    Batch = apps.get_model("marketplace", "Batch")
    batch = Batch.objects.create(owner=alice, api_key=key, total=2, succeeded=1,
                                 cost_wei=10**18 + 7, webhook=delivery,
                                 webhook_url="https://example.com/hook")
    Item = apps.get_model("marketplace", "BatchItem")
    for index in range(2):
        Item.objects.create(batch=batch, index=index, model="m", prompt=f"p{index}",
                            params={"max_tokens": 8}, tokens=index, cost_wei=2**70 + index)
    apps.get_model("marketplace", "GatewayRequest").objects.create(
        user=alice, api_key=key, endpoint="inference", model="m", cost_wei=3 * 10**17,
        text="hello", reference="ref-1")
    Server = apps.get_model("writer", "DiscordServer")
    server = Server.objects.create(guild_id=42, name="Owls", billing_user=alice)
    apps.get_model("writer", "DiscordDailySpend").objects.create(
        server=server, day=datetime.date(2026, 1, 2), committed_wei=5)
    apps.get_model("writer", "DiscordJob").objects.create(
        server=server, user_id=7, channel_id=8, command="ask", prompt="q", full_prompt="Q: q",
        model="m", max_tokens=16, price_cap_wei=10**9, spend_day=datetime.date(2026, 1, 2))
    # Seeded by a migration, unless an earlier test's flush emptied the table.
    apps.get_model("writer", "GenerationProfile").objects.update_or_create(
        content_type="blog", length="short",
        defaults={"model": "smollm2-135m-instruct", "max_tokens": 333, "temperature": 0.8})
    ContentType = apps.get_model("contenttypes", "ContentType")
    for app, models in (("marketplace", MOVED["gateway"]),
                        ("writer", MOVED["discordbot"] + MOVED["content"])):
        for model in models:
            ContentType.objects.get_or_create(app_label=app, model=model)


@pytest.mark.django_db(transaction=True)
def test_the_moved_models_keep_their_tables_and_every_row():
    try:
        old = _migrate(BEFORE)
        _fill(old)
        before = _snapshot()
        _migrate(_latest())
        after = _snapshot()
    finally:
        _migrate(_latest())

    # Tables that later migrations add start empty; every table from before is as it was.
    assert not any(rows for table, rows in after.items() if table not in before)
    after = {table: rows for table, rows in after.items() if table in before}
    assert {t: len(r) for t, r in after.items() if r} == {t: len(r) for t, r in before.items() if r}
    assert _as_before(after, before) == before
    # The models read them back from their new apps, relations included.
    batch = Batch.objects.get()
    assert batch.cost_wei == 10**18 + 7 and batch.webhook.event == "batch.completed"
    assert [i.cost_wei for i in BatchItem.objects.filter(batch=batch)] == [2**70, 2**70 + 1]
    assert GatewayRequest.objects.get().reference == "ref-1"
    server = DiscordServer.objects.get()
    assert server.billing_user.username == "alice"
    assert DiscordDailySpend.objects.get(server=server).committed_wei == 5
    assert DiscordJob.objects.get(server=server).full_prompt == "Q: q"
    assert GenerationProfile.objects.get(content_type="blog", length="short").max_tokens == 333


@pytest.mark.django_db(transaction=True)
def test_permissions_follow_the_moved_models_to_their_new_apps():
    from django.contrib.contenttypes.models import ContentType

    try:
        _fill(_migrate(BEFORE))
        _migrate(_latest())
    finally:
        _migrate(_latest())
    for app, models in MOVED.items():
        for model in models:
            assert ContentType.objects.filter(app_label=app, model=model).count() == 1
    assert not ContentType.objects.filter(app_label="marketplace", model="batch").exists()
    assert not ContentType.objects.filter(app_label="writer", model="discordjob").exists()
