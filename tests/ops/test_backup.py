import subprocess
from pathlib import Path

import pytest
from django.db import connection

from accounts.models import User

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
def test_a_backup_restores_into_a_fresh_database_with_every_row(tmp_path):
    for name in ("alice", "bob", "charlie"):
        User.objects.create_user(username=name, password="pw-not-used-123")
    s = connection.settings_dict
    url = f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    result = subprocess.run(
        [str(ROOT / "scripts" / "pg-backup-verify.sh"), url, str(tmp_path / "db.dump")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "identical after restore" in result.stdout
    assert (tmp_path / "db.dump").stat().st_size > 0
    tables = int(result.stdout.split("verified: ")[1].split(" tables")[0])
    assert tables >= 10  # Django's own tables and ours, all compared
