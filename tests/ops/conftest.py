"""Fixtures of the operations tests: named users, a webhook receiver that records what it
is sent, a Redis server of the test's own, and Celery workers and beats as real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from accounts.models import User
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def alice(db):
    return User.objects.create_user(username="alice", password="a-long-password-1")


@pytest.fixture
def bob(db):
    return User.objects.create_user(username="bob", password="a-long-password-2")


class Receiver:
    """An HTTP endpoint that records each webhook request. `hold` makes the next request
    wait until released, so a test can act while a sender is in the middle of sending."""

    def __init__(self):
        self.requests: list[dict] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"headers": dict(self.headers), "body": body,
                                          "json": json.loads(body)})
                receiver.arrived.set()
                receiver.release.wait(60)
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hold(self) -> None:
        self.arrived.clear()
        self.release.clear()

    def keys(self) -> list[str]:
        return [r["headers"]["X-Inkmarket-Idempotency-Key"] for r in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


class RedisServer:
    """A redis-server of the test's own, so the test may stop and restart it. Data is kept
    in an append-only file, as a production Redis keeps its queue across a restart."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.dir = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise RuntimeError("redis-server did not start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a product process started by a test: the test's database."""
    from django.db import connection

    s = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
           "DATABASE_URL": f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}",
           "LOG_FORMAT": "plain", "LOG_LEVEL": "INFO"}
    env.update(extra)
    return env


class Processes:
    """Product processes (Celery workers, beat, the web server) started by one test."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.started: list[subprocess.Popen] = []
        self.count = 0

    def start(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        self.count += 1
        log = open(self.tmp / f"{name}-{self.count}.log", "wb")
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        proc.log_path = self.tmp / f"{name}-{self.count}.log"
        proc.log_file = log
        self.started.append(proc)
        return proc

    def worker(self, env: dict[str, str], *, beat: bool = False) -> subprocess.Popen:
        args = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
                "--loglevel", "info", "--without-gossip", "--without-mingle",
                "-n", f"ops{self.count}@%h"]
        if beat:
            args += ["-B", "-s", str(self.tmp / f"beat-{self.count}")]
        return self.start(args, env, "worker")

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the process and its children (an embedded beat), as a lost machine."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            else:
                # Whatever it started in its session (an embedded beat) goes with it.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.log_file.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log_path.read_text(errors='replace')[-4000:]}"
                         for p in self.started)


@pytest.fixture
def processes(tmp_path):
    group = Processes(tmp_path)
    yield group
    group.stop_all()


def wait_for(predicate, *, timeout: float, every: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class TcpProxy:
    """A TCP proxy in front of a server, in a thread of its own. `stop` closes the port and
    every connection through it (the server becomes unreachable, as when a node or the
    network in between goes down); `start` opens the same port again."""

    def __init__(self, target_port: int):
        import asyncio

        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = None
        self.writers: set = set()

    def _call(self, coro):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader, client_writer):
        import asyncio

        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1",
                                                                         self.target_port)
        except OSError:
            client_writer.close()
            return
        self.writers |= {client_writer, server_writer}
        await asyncio.gather(self._pipe(client_reader, server_writer),
                             self._pipe(server_reader, client_writer))
        self.writers -= {client_writer, server_writer}

    async def _start(self):
        import asyncio

        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                 reuse_address=True)

    async def _stop(self):
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        if self.server is not None and self.server.is_serving():
            self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()
