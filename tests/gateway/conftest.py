"""What the gateway tests share: named users with keys, a clean rate-limit count, an
own cache namespace, a tiny real OpenAI-compatible upstream server, and real server
processes (uvicorn on config.asgi) on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from django.conf import settings as django_settings

from accounts.services import api_key_create, user_create
from tests.conftest import MODEL, ROOT, free_port

CREDIT = 10**15


def nonce() -> str:
    """Part of every prompt: results are cached for an hour in a Redis other runs share."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(autouse=True)
def gateway_settings(settings):
    settings.ACCOUNTS_SIGNUP_CREDIT_WEI = CREDIT
    settings.GATEWAY_MODELS = [MODEL]
    settings.GATEWAY_UPSTREAM_URL = None
    settings.CACHES = {name: {**conf, "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
                       for name, conf in settings.CACHES.items()}
    return settings


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Forget request counts and the till's mirrors an earlier test (or run) left in
    this run's Redis db."""
    def clear():
        client = redis.Redis.from_url(django_settings.REDIS_URL)
        for name in client.scan_iter("inkmarket:ratelimit*"):
            client.delete(name)
        # The till's mirrors are named by account id, and ids start again in each test.
        for name in client.scan_iter("inkmarket:till:*"):
            client.delete(name)
        client.close()
    clear()
    yield
    clear()


@pytest.fixture(autouse=True)
def forget_quotes():
    from gateway.inference import quotes_forget

    quotes_forget()
    yield
    quotes_forget()


@pytest.fixture(autouse=True)
def forget_kept_keys():
    """Keys a billed request read are kept in the process a moment (gateway.keys)."""
    from gateway import keys

    keys._kept.clear()
    yield
    keys._kept.clear()


@pytest.fixture(autouse=True)
def close_gateway_connections():
    """The gateway's database threads keep their connections; close them after each test
    so the test database can be flushed and dropped."""
    yield
    from gateway.db import gateway_db_close

    gateway_db_close()


class Named:
    def __init__(self, user, raw: str, key):
        self.user, self.raw, self.key = user, raw, key

    @property
    def headers(self) -> dict:
        return {"X-API-Key": self.raw}

    @property
    def account(self):
        from accounts.models import Account

        return Account.objects.get(user=self.user)


def _named(username: str, **key_options) -> Named:
    user = user_create(username=username, password=f"a-long-password-{username}")
    made = api_key_create(user=user, name=f"{username}'s key", **key_options)
    return Named(user, made.raw, made.key)


@pytest.fixture
def alice(transactional_db):
    return _named("alice")


@pytest.fixture
def bob(transactional_db):
    return _named("bob")


# ---- A tiny OpenAI-compatible upstream ---------------------------------------------------


class Upstream:
    """Answers /v1/completions and /v1/chat/completions at once with one piece per token
    ("w0 ", "w1 ", ...), up to max_tokens or 8. A prompt (a chat: its messages' text) with
    [fail] gets a 500; with [slow] the pieces come every 50 ms (something to cancel), with
    [long] there are up to 64 of them. A chat with tools and [tool] gets a call of the first
    tool."""

    def __init__(self):
        self.requests: list[dict] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms wait for a delayed ACK

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                upstream.requests.append(body)
                chat = self.path.endswith("/chat/completions")
                prompt = " ".join(str(m.get("content")) for m in body["messages"]) if chat \
                    else body["prompt"]
                if "[fail]" in prompt:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                most = 64 if ("[long]" in prompt or "[slow]" in prompt) else 8
                count = min(body["max_tokens"], most)
                pieces = [f"w{i} " for i in range(count)]
                finish = "length" if count == body["max_tokens"] else "stop"
                usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": count,
                         "total_tokens": len(prompt.split()) + count}
                call = None
                if chat and body.get("tools") and "[tool]" in prompt:
                    name = body["tools"][0]["function"]["name"]
                    call = {"index": 0, "id": "call_test", "type": "function",
                            "function": {"name": name, "arguments": "{}"}}
                    pieces, finish = [], "tool_calls"
                if not body.get("stream"):
                    answer = {"message": {"role": "assistant", "content": "".join(pieces)}} \
                        if chat else {"text": "".join(pieces)}
                    if call is not None:
                        answer = {"message": {"role": "assistant", "content": None,
                                              "tool_calls": [call]}}
                    data = json.dumps({"id": "cmpl-test", "object": "text_completion",
                                       "choices": [{"index": 0, "finish_reason": finish,
                                                    **answer}],
                                       "usage": usage}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    if call is not None:
                        chunk = {"id": "cmpl-test", "choices": [
                            {"index": 0, "finish_reason": "tool_calls",
                             "delta": {"role": "assistant", "tool_calls": [call]}}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    for number, piece in enumerate(pieces):
                        last = number == len(pieces) - 1
                        answer = {"delta": {"content": piece}} if chat else {"text": piece}
                        chunk = {"id": "cmpl-test", "choices": [
                            {"index": 0, "finish_reason": finish if last else None,
                             **answer}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        if "[slow]" in prompt:
                            time.sleep(0.05)
                    self.wfile.write(f"data: {json.dumps({'id': 'cmpl-test', 'choices': [], 'usage': usage})}\n\n".encode())  # noqa: E501
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the gateway stopped reading: a cancelled stream

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream(settings):
    server = Upstream()
    settings.GATEWAY_UPSTREAM_URL = server.url
    settings.GATEWAY_UPSTREAM_PRICE_WEI = 10**9
    yield server
    server.close()


# ---- Real server processes ----------------------------------------------------------------


def database_url() -> str:
    db = django_settings.DATABASES["default"]
    return (f"postgres://{db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}:"
            f"{db.get('PORT') or 5432}/{db['NAME']}")


def network_env(network) -> dict[str, str]:
    keys = network.anvil.keys["platform"]
    return {"CHAIN_RPC_URL": network.anvil.url, "VAR_DIR": str(network.tmp),
            "WALLET_KEYSTORE_FILE": str(keys.keystore),
            "WALLET_PASSPHRASE_FILE": str(keys.passphrase_file)}


class Servers:
    """uvicorn processes serving config.asgi against the test's database and Redis."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, env: dict[str, str] | None = None) -> str:
        port = free_port()
        full = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
                "DATABASE_URL": database_url(), "REDIS_URL": django_settings.REDIS_URL,
                "LOG_LEVEL": "WARNING", "ACCOUNTS_SIGNUP_CREDIT_WEI": str(CREDIT),
                "GATEWAY_MODELS": MODEL, **(env or {})}
        with open(self.tmp / f"server-{port}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host",
                 "127.0.0.1", "--port", str(port), "--no-access-log", "--lifespan", "off"],
                cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                return url
            except urllib.error.HTTPError:
                return url  # answering (a 503 names a missing part, still an answer)
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError((self.tmp / f"server-{port}.log").read_text())

    def stop(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def servers(tmp_path):
    made = Servers(tmp_path)
    yield made
    made.stop()
