"""The embedded default: what `make run` uses. No outside services are needed."""

import os
import secrets
from pathlib import Path

_var = Path(os.environ.get("VAR_DIR") or Path(__file__).resolve().parent.parent.parent / "var")
_key_file = _var / "secret_key"
if not os.environ.get("SECRET_KEY") and not os.environ.get("SECRET_KEY_FILE"):
    # A per-checkout key, made once, so sessions survive restarts.
    _var.mkdir(parents=True, exist_ok=True)
    if not _key_file.exists():
        _key_file.write_text(secrets.token_urlsafe(50))
        _key_file.chmod(0o600)
    os.environ["SECRET_KEY_FILE"] = str(_key_file)
os.environ.setdefault("DEBUG", "1")
# The local hosts and any webhook receiver you try run on this machine.
os.environ.setdefault("OUTBOUND_ALLOWED_HOSTS", "localhost,127.0.0.0/8,::1")
# The local hosts (`manage.py devnet`) listen on loopback.
os.environ.setdefault("MARKETPLACE_ALLOWED_HOST_NETWORKS", "localhost,127.0.0.0/8,::1")
# New accounts start with 0.001 ETH of devnet money to try things with.
os.environ.setdefault("ACCOUNTS_SIGNUP_CREDIT_WEI", str(10**15))

from config.settings.base import *  # noqa: E402,F403

# Serve static files straight from the source folders; no collectstatic step while developing.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG  # noqa: F405
