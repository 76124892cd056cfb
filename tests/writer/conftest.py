import pytest

from accounts.models import User


@pytest.fixture
def alice(db):
    return User.objects.create_user(username="alice", password="a-long-password-1")


@pytest.fixture
def bob(db):
    return User.objects.create_user(username="bob", password="a-long-password-2")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture(autouse=True)
async def close_db_connections():
    """Async code reaches the database from asgiref's worker thread; close that
    connection after each test so the test database can be dropped."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    """Results are cached for an hour in a Redis that other test runs share: each test gets
    its own key prefix, so a result cached by an earlier run is never a hit here."""
    import uuid

    settings.CACHES = {name: {**conf, "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
                       for name, conf in settings.CACHES.items()}
