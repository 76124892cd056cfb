"""Tests run against this machine's real PostgreSQL and Redis."""

import os
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/inkmarket")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")

# Under pytest-xdist each worker has its own database (pytest-django names it
# test_<name>_gw<n>), so it gets its own Redis database and var folder too: ids start
# again in each database, and the Redis keys and files named by them would meet. The
# processes a test starts inherit the environment, marked so as not to shift again.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker.startswith("gw") and os.environ.get("INKMARKET_TEST_WORKER") != _worker:
    _number = int(_worker.removeprefix("gw"))
    _base, _, _db = os.environ["REDIS_URL"].rpartition("/")
    os.environ["REDIS_URL"] = f"{_base}/{(int(_db or 0) - _number) % 16}"
    os.environ.setdefault("VAR_DIR", str(Path(__file__).resolve().parents[2] / "var"
                                         / f"test-{_worker}"))
    os.environ["INKMARKET_TEST_WORKER"] = _worker
# The suite's end-to-end tests of the per-job flow (escrow, claims, refunds, disputes on
# chain) run with channels off; the tests of channels turn them on (docs/sessions.md).
os.environ.setdefault("MARKETPLACE_CHANNELS", "0")
# Tests sign up many users from 127.0.0.1; the test of the limit sets its own.
os.environ.setdefault("ACCOUNTS_SIGNUPS_PER_IP_PER_HOUR", "100000")
# Tests write from fresh accounts, as on the devnet; the default of 0 is tested by booting
# the base and production settings.
os.environ.setdefault("ACCOUNTS_SIGNUP_CREDIT_WEI", str(10**15))
# The tests' webhook receivers listen on loopback; tests of the policy itself empty this.
os.environ.setdefault("OUTBOUND_ALLOWED_HOSTS", "localhost,127.0.0.0/8,::1")
# ... and so do the tests' hosts; tests of the host URL policy set their own.
os.environ.setdefault("MARKETPLACE_ALLOWED_HOST_NETWORKS", "localhost,127.0.0.0/8,::1")

# The suite's discovery tests start their own bootstrap node; no other test joins a devnet's.
os.environ.setdefault("P2P_DISCOVERY", "0")

from config.settings.base import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve static files from the source folders (the browser test's server needs htmx).
WHITENOISE_USE_FINDERS = True
