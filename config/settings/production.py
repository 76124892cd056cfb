"""Production: PostgreSQL, Redis, a real chain, TLS in front. Passes `manage.py check
--deploy` with no warnings.

Secrets come from files: SECRET_KEY_FILE, METRICS_TOKEN_FILE, and DATABASE_URL_FILE /
REDIS_URL_FILE (URLs carry passwords) as well as the plain variables; the platform wallet
is an encrypted keystore and its passphrase, both files (WALLET_KEYSTORE_FILE,
WALLET_PASSPHRASE_FILE), and so is the arbitrator's key (MARKETPLACE_ARBITRATOR_KEYSTORE_FILE,
MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE).
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_secret

# Read before the base settings parse them, so a *_FILE works wherever the URL would.
for _name in ("DATABASE_URL", "REDIS_URL"):
    _value = env_secret(_name)
    if _value:
        os.environ[_name] = _value

from config.settings.base import *  # noqa: E402, F403
from config.settings.base import (  # noqa: E402
    CHAIN_RPC_URL,
    DATABASE_URL,
    DEBUG,
    MARKETPLACE_ARBITRATOR_KEYSTORE_FILE,
    MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE,
    MARKETPLACE_STREAM_ENCRYPTION,
    METRICS_ALLOW_ANONYMOUS,
    METRICS_TOKEN,
    REDIS_URL,
    SECRET_KEY,
    WALLET_KEYSTORE_FILE,
    WALLET_PASSPHRASE_FILE,
)

if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production")
# Hosts are reached over wss:// only (loopback and our own named hosts excepted), and
# streams are sealed.
MARKETPLACE_REQUIRE_TLS = env_bool("MARKETPLACE_REQUIRE_TLS", True)
if not MARKETPLACE_REQUIRE_TLS or not MARKETPLACE_STREAM_ENCRYPTION:
    raise ImproperlyConfigured("MARKETPLACE_REQUIRE_TLS and MARKETPLACE_STREAM_ENCRYPTION "
                               "must be on in production")
if not DATABASE_URL or not DATABASE_URL.startswith(("postgres://", "postgresql://")):
    raise ImproperlyConfigured("DATABASE_URL must be a PostgreSQL URL in production")
if not REDIS_URL:
    raise ImproperlyConfigured("REDIS_URL must be set in production")
if not CHAIN_RPC_URL:
    raise ImproperlyConfigured("CHAIN_RPC_URL must be set in production (there is no devnet)")
# /metrics (and /health's details) are for the operators' Prometheus only.
if not METRICS_TOKEN:
    raise ImproperlyConfigured("METRICS_TOKEN (or METRICS_TOKEN_FILE) must be set in "
                               "production: /metrics answers only to that bearer token")
if len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 32 characters")
if METRICS_ALLOW_ANONYMOUS:
    raise ImproperlyConfigured("METRICS_ALLOW_ANONYMOUS must be off in production")
if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters of real randomness")
# Without a wallet of its own the platform would fall back to the devnet's keys, which
# anyone can sign with (marketplace.wallet also refuses them on any chain but the devnet).
# Every process names its wallet, and the files must be there at start, not at the first job.
if not WALLET_KEYSTORE_FILE or not WALLET_PASSPHRASE_FILE:
    raise ImproperlyConfigured(
        "WALLET_KEYSTORE_FILE and WALLET_PASSPHRASE_FILE must be set in production: the "
        "platform wallet's encrypted keystore and its passphrase, as files (the devnet's "
        "well-known keys are never used here)")
# The arbitrator's key likewise: without it, disputes would be judged with the devnet's
# public arbitrator key, and the platform wallet must never stand in (it pays for the jobs).
if not MARKETPLACE_ARBITRATOR_KEYSTORE_FILE or not MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE:
    raise ImproperlyConfigured(
        "MARKETPLACE_ARBITRATOR_KEYSTORE_FILE and MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE must be "
        "set in production: the arbitrator's own encrypted keystore and its passphrase, as "
        "files (never the platform wallet's)")
if MARKETPLACE_ARBITRATOR_KEYSTORE_FILE == WALLET_KEYSTORE_FILE:
    raise ImproperlyConfigured("MARKETPLACE_ARBITRATOR_KEYSTORE_FILE is the platform wallet's "
                               "keystore: the arbitrator needs a key of its own")
for _setting, _path in (("WALLET_KEYSTORE_FILE", WALLET_KEYSTORE_FILE),
                        ("WALLET_PASSPHRASE_FILE", WALLET_PASSPHRASE_FILE),
                        ("MARKETPLACE_ARBITRATOR_KEYSTORE_FILE",
                         MARKETPLACE_ARBITRATOR_KEYSTORE_FILE),
                        ("MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE",
                         MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE)):
    if _path and not Path(_path).is_file():
        raise ImproperlyConfigured(f"{_setting}={_path!r} is not a readable file")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# Probes and scrapes come from inside the cluster over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^health(/live|/ready)?$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
