"""Helpers shared by the benchmarks: free ports, server processes, figures."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@contextlib.contextmanager
def process(args: list[str], *, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    # Output goes to a file, not a pipe: an unread pipe fills up and blocks the process.
    log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        args, cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    except BaseException:
        if proc.poll() is not None:
            tail = Path(log.name).read_text(errors="replace")[-3000:]
            print(f"{args[1:3]} exited with {proc.returncode}:\n{tail}", file=sys.stderr)
        raise
    finally:
        log.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_answering(url: str, timeout: float = 90.0) -> None:
    """Until the server answers at all: an HTTP error is an answer too (/health may say
    503 when a part it checks is missing)."""
    import urllib.error

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.1)


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database a postgres:// URL names, if it is not there."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.strip("/")
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", "", ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def uvicorn(app: str, port: int, env: dict[str, str] | None = None):
    return process(
        [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--lifespan", "off"],
        env=env,
    )


def report(name: str, value: float, unit: str = "") -> None:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    print(f"{name}: {text} {unit}".rstrip(), flush=True)


def report_values(name: str, values: list[float], unit: str = "") -> None:
    """Several figures of one kind on one line (each run's, say), in the order given."""
    print(f"{name}: {' '.join(f'{v:.3f}' for v in values)} {unit}".rstrip(), flush=True)


def percentile(values: list[float], pct: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]
