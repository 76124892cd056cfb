"""The backup script: back up, restore into a fresh database, compare every table's row
count; exact even while the database is being written to."""

import subprocess
import threading
from pathlib import Path

import pytest
from django.db import connection, connections

from accounts.models import User
from marketplace.jobs import job_create

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def run_script(backup: Path) -> subprocess.CompletedProcess:
    s = connection.settings_dict
    url = f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    return subprocess.run([str(ROOT / "scripts" / "pg-backup-verify.sh"), url, str(backup)],
                          capture_output=True, text=True, timeout=180)


def test_a_backup_restores_into_a_fresh_database_with_every_row(tmp_path):
    for name in ("alice", "bob", "charlie"):
        User.objects.create_user(username=name, password="pw-not-used-123")
    result = run_script(tmp_path / "db.dump")
    assert result.returncode == 0, result.stderr
    assert "identical after restore" in result.stdout
    assert (tmp_path / "db.dump").stat().st_size > 0
    tables = int(result.stdout.split("verified: ")[1].split(" tables")[0])
    rows = int(result.stdout.split(" tables, ")[1].split(" rows")[0])
    assert tables >= 10  # Django's own tables and ours, all compared
    assert rows >= 3


def test_writes_during_the_backup_do_not_make_it_differ(tmp_path):
    stop = threading.Event()
    written = []

    def write():
        try:
            while not stop.is_set():
                written.append(job_create(model="m", prompt="p", max_tokens=1,
                                          temperature=0.0))
        finally:
            connections.close_all()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        result = run_script(tmp_path / "db.dump")
    finally:
        stop.set()
        writer.join()
    assert result.returncode == 0, result.stderr
    assert len(written) > 10  # the database really was being written to meanwhile
    restored_jobs = next(line for line in result.stdout.splitlines() if "verified" in line)
    assert "identical after restore" in restored_jobs


def test_a_source_that_cannot_be_read_fails_loudly(tmp_path):
    result = subprocess.run(
        [str(ROOT / "scripts" / "pg-backup-verify.sh"),
         "postgres://postgres@127.0.0.1:5432/no_such_database_here", str(tmp_path / "x.dump")],
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "verified" not in result.stdout
