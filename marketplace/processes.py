"""Starting, finding and stopping the local network's processes (anvil, hosts, workers).

Each process is started in its own session with its output in a log under var/, and its
pid recorded in a JSON file, so `devnet down` in another terminal can stop exactly what
`devnet up` started, and a stale record (a pid that is gone) is noticed, not trusted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class ProcessRecord:
    name: str
    pid: int
    args: list[str]
    log: str
    url: str | None = None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


class ProcessGroup:
    def __init__(self, state_file: Path):
        self.state_file = state_file
        self.records: dict[str, ProcessRecord] = {}
        if state_file.exists():
            for item in json.loads(state_file.read_text()):
                self.records[item["name"]] = ProcessRecord(**item)

    def save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps([asdict(r) for r in self.records.values()],
                                              indent=2))

    def running(self, name: str) -> ProcessRecord | None:
        record = self.records.get(name)
        return record if record and alive(record.pid) else None

    def start(self, name: str, args: list[str], *, log: Path, env: dict[str, str] | None = None,
              url: str | None = None, cwd: Path | None = None) -> ProcessRecord:
        if existing := self.running(name):
            return existing
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
            )
        record = ProcessRecord(name=name, pid=proc.pid, args=args, log=str(log), url=url)
        self.records[name] = record
        self.save()
        return record

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        record = self.records.pop(name, None)
        self.save()
        if record is None or not alive(record.pid):
            return False
        try:
            os.killpg(record.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(record.pid):
                return True
            time.sleep(0.1)
        try:
            os.killpg(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True

    def stop_all(self) -> list[str]:
        names = list(self.records)
        # Reverse start order: hosts before the chain they talk to.
        for name in reversed(names):
            self.stop(name)
        return names


def wait_http(url: str, *, timeout: float, process: ProcessRecord | None = None) -> None:
    """Wait until `url` answers 2xx; fail early, with the log's tail, if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if 200 <= response.status < 300:
                    return
        except OSError:
            pass
        if process is not None and not alive(process.pid):
            tail = Path(process.log).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{process.name} exited while starting; its log ends:\n{tail}")
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
