import os
import subprocess
import sys
import time
import urllib.request

import pytest

from accounts.models import User
from tests.conftest import ROOT, free_port

CHROMIUM = "/usr/bin/chromium"


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


@pytest.fixture
def server(network, tmp_path, settings):
    """The product served by `manage.py serve` (no worker: tests run the beat's tasks
    themselves), on the network's chain with one host."""
    network.start_hosts({"host-1": 10**9})
    db = settings.DATABASES["default"]
    port = free_port()
    env = {**os.environ,
           "DJANGO_SETTINGS_MODULE": "config.settings.test",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "CHAIN_RPC_URL": network.anvil.url, "VAR_DIR": str(tmp_path),
           "WALLET_KEYSTORE_FILE": str(network.anvil.keys["platform"].keystore),
           "WALLET_PASSPHRASE_FILE": str(network.anvil.keys["platform"].passphrase_file),
           "FUNDS_CONFIRMATIONS": str(settings.FUNDS_CONFIRMATIONS)}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "manage.py", "serve", "--no-devnet", "--port",
                                 str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):  # a minute: start-up is slow on a busy machine
        try:
            urllib.request.urlopen(f"{url}/health/live", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=15)
