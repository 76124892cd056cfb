"""Small, strict readers for settings that come from the environment.

Each helper raises ImproperlyConfigured with the variable's name and what was wrong,
so a typo fails at start-up instead of surfacing as odd behaviour later.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def env_str(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_hosts(name: str, default: list[str]) -> list[str]:
    """A comma-separated list of host names and IP networks (`localhost`, `10.0.0.0/8`,
    `::1`); a malformed entry fails here rather than never matching."""
    entries = [entry.lower().rstrip(".") for entry in env_list(name, default)]
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOST_NAME.fullmatch(entry):
                raise ImproperlyConfigured(
                    f"{name}: {entry!r} is neither a host name nor an IP network") from None
    return entries


def env_secret(name: str, default: str | None = None) -> str | None:
    """Read NAME, or the contents of the file named by NAME_FILE (not both)."""
    value = os.environ.get(name)
    path = os.environ.get(f"{name}_FILE")
    if value and path:
        raise ImproperlyConfigured(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc}") from None
    return value if value else default


def env_url(name: str, schemes: set[str], default: str | None = None) -> str | None:
    """A URL whose scheme is one of `schemes`, with a host when the scheme needs one."""
    raw = os.environ.get(name, default)
    if raw is None or raw == "":
        return None
    parts = urlsplit(raw)
    if parts.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(
            f"{name} has scheme {parts.scheme or '(none)'!r}; expected one of: {allowed}"
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has a malformed port: {raw!r}") from None
    return raw


def database_config(url: str | None, *, sqlite_path: Path) -> dict:
    """DATABASES['default'] from a DATABASE_URL, or a SQLite file when it is unset."""
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(sqlite_path),
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    import dj_database_url

    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "sqlite"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL must start with postgres://, postgresql:// or sqlite://, got {url!r}"
        )
    if parts.scheme.startswith("postgres") and not parts.path.strip("/"):
        raise ImproperlyConfigured(f"DATABASE_URL names no database: {url!r}")
    try:
        parts.port  # noqa: B018
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is malformed ({exc}): {url!r}") from None
    return config
