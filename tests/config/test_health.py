import shutil
import subprocess
import time

import pytest
import redis

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_redis(unused_port, settings):
    """A Redis server of the test's own, so the test can stop it."""
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(unused_port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{unused_port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    settings.REDIS_URL = url
    yield server
    server.kill()
    server.wait()


def test_health_names_each_dependency_and_answers_200(client, own_redis):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True


def test_health_reports_a_stopped_redis_as_unhealthy(client, own_redis):
    own_redis.terminate()
    own_redis.wait()
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["redis"]["ok"] is False
    assert "Connection" in body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"] is True
