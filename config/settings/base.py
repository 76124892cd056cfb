"""Settings shared by every environment. Everything that varies comes from the environment."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import (
    database_config,
    env_bool,
    env_hosts,
    env_int,
    env_list,
    env_secret,
    env_str,
    env_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("VAR_DIR") or BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "template_partials",
    "accounts",
    "marketplace",
    "content",
    "writer",
    "gateway",
    "discordbot",
]

MIDDLEWARE = [
    "observability.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.static.AsyncWhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# Under ASGI (config.handler) Django's own middleware above runs in its async adaptation
# from config.middleware, which hands no hook to a thread that needs none.

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_url("DATABASE_URL", {"postgres", "postgresql", "sqlite"})
DATABASES = {"default": database_config(DATABASE_URL, sqlite_path=VAR_DIR / "db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Redis is optional: without it, the embedded default runs everything in process.
REDIS_URL = env_url("REDIS_URL", {"redis", "rediss", "unix"})
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                  "CONFIG": {"hosts": [REDIS_URL]}}}
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # Kombu's filesystem transport needs no server and still crosses processes.
    _celery_dir = VAR_DIR / "celery"
    for _sub in ("queue", "processed", "results", "control"):
        (_celery_dir / _sub).mkdir(parents=True, exist_ok=True)
    # The host part means nothing to this transport; without one, kombu warns at every
    # connection that it reverts to 'localhost'.
    CELERY_BROKER_URL = "filesystem://localhost/"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_dir / "queue"),
        "data_folder_out": str(_celery_dir / "queue"),
        "processed_folder": str(_celery_dir / "processed"),
        "control_folder": str(_celery_dir / "control"),
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = f"file://{_celery_dir / 'results'}"

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# The chain: a JSON-RPC endpoint; unset means the local devnet that `make run` starts.
CHAIN_RPC_URL = env_url("CHAIN_RPC_URL", {"http", "https", "ws", "wss"})

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOG_FORMAT = env_str("LOG_FORMAT", "json")
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "observability.logging.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "inkmarket.request": {"level": "WARNING" if LOG_LEVEL == "INFO" and DEBUG else LOG_LEVEL},
    },
}

# The periodic work (docs/operations.md). OPS_BEAT_INTERVAL_S is a minute; fault tests
# shorten it so they need not wait a minute for each sweep.
OPS_BEAT_INTERVAL_S = float(env_int("OPS_BEAT_INTERVAL_S", 60))
CELERY_BEAT_SCHEDULE = {
    "retry-due-webhooks": {"task": "marketplace.tasks.retry_due_webhooks",
                           "schedule": OPS_BEAT_INTERVAL_S},
    "refund-abandoned-attempts": {"task": "marketplace.tasks.refund_abandoned_attempts",
                                  "schedule": OPS_BEAT_INTERVAL_S},
    "resolve-disputes": {"task": "marketplace.tasks.resolve_disputes",
                         "schedule": OPS_BEAT_INTERVAL_S},
    "sweep-processing": {"task": "marketplace.tasks.sweep_processing",
                         "schedule": OPS_BEAT_INTERVAL_S},
    "watch-orphaned-jobs": {"task": "marketplace.tasks.watch_orphaned_jobs",
                            "schedule": OPS_BEAT_INTERVAL_S},
    "release-stale-reservations": {"task": "marketplace.tasks.release_stale_reservations",
                                   "schedule": 10 * OPS_BEAT_INTERVAL_S},
    "channels-maintain": {"task": "marketplace.tasks.channels_maintain",
                          "schedule": OPS_BEAT_INTERVAL_S},
    "till-reconcile": {"task": "gateway.tasks.till_reconcile",
                       "schedule": OPS_BEAT_INTERVAL_S},
}

# ---- Marketplace -------------------------------------------------------------------
# The models this product offers. Discovery and price quotes are made for these only (a
# model id a caller makes up never reaches the chain, the hosts or a metric's labels).
MARKETPLACE_MODELS = env_list("MARKETPLACE_MODELS", ["smollm2-135m-instruct"])
# Models whose discovery results are kept at once (least recently used goes first).
DISCOVERY_CACHE_MAX_MODELS = env_int("DISCOVERY_CACHE_MAX_MODELS", 64)
# Each host's figures (TTFT p50, tokens per second, success rate, uptime: GET /v1/models,
# and ranking) are taken over our own jobs and probes of this many recent seconds.
MARKETPLACE_FIGURES_WINDOW_S = env_int("MARKETPLACE_FIGURES_WINDOW_S", 3600)
if MARKETPLACE_FIGURES_WINDOW_S < 60:
    raise ImproperlyConfigured("MARKETPLACE_FIGURES_WINDOW_S must be at least 60 seconds")
# ---- Discovery over libp2p (docs/discovery.md) ----------------------------------------
# Multiaddrs (/ip4/.../tcp/.../p2p/<peer id>) of the DHT's bootstrap nodes; empty: the
# registry path only. The devnet's own bootstrap node is used when this is unset there.
P2P_BOOTSTRAP = env_list("P2P_BOOTSTRAP", [])
# Clients find hosts on the DHT (the registry still gates them); off: the registry path.
P2P_DISCOVERY = env_bool("P2P_DISCOVERY", True)
# The devnet's bootstrap node listens here (on 127.0.0.1).
P2P_DEVNET_BOOTSTRAP_PORT = env_int("P2P_DEVNET_BOOTSTRAP_PORT", 4101)
# Limits on what strangers send: one record's bytes, its time to live, records kept at
# once, and records or gossip messages a peer may send per minute before being ignored.
P2P_MAX_RECORD_BYTES = env_int("P2P_MAX_RECORD_BYTES", 8192)
P2P_RECORD_TTL_S = env_int("P2P_RECORD_TTL_S", 30)
P2P_MAX_RECORD_TTL_S = env_int("P2P_MAX_RECORD_TTL_S", 600)
P2P_MAX_RECORDS = env_int("P2P_MAX_RECORDS", 10_000)
P2P_MESSAGES_PER_PEER_PER_MINUTE = env_int("P2P_MESSAGES_PER_PEER_PER_MINUTE", 120)
# A model's providers are looked up on the DHT again after this many seconds (gossip
# keeps the view live in between).
P2P_LOOKUP_INTERVAL_S = env_int("P2P_LOOKUP_INTERVAL_S", 10)
if not 256 <= P2P_MAX_RECORD_BYTES <= 65536:
    raise ImproperlyConfigured("P2P_MAX_RECORD_BYTES must be between 256 and 65536")
if not 5 <= P2P_RECORD_TTL_S <= P2P_MAX_RECORD_TTL_S:
    raise ImproperlyConfigured("P2P_RECORD_TTL_S must be between 5 and P2P_MAX_RECORD_TTL_S")
DEVNET_PORT = env_int("DEVNET_PORT", 8545)
DEVNET_DIR = VAR_DIR / "devnet"
CHAIN_DEPLOYMENTS_DIR = VAR_DIR / "deployments"
CHAIN_RPC = CHAIN_RPC_URL or f"http://127.0.0.1:{DEVNET_PORT}"
# The platform wallet pays escrow for every job: an encrypted keystore and its passphrase,
# both files. Unset, the devnet's platform key is used.
WALLET_KEYSTORE_FILE = env_str("WALLET_KEYSTORE_FILE") or None
WALLET_PASSPHRASE_FILE = env_str("WALLET_PASSPHRASE_FILE") or None
if bool(WALLET_KEYSTORE_FILE) != bool(WALLET_PASSPHRASE_FILE):
    raise ImproperlyConfigured("set both WALLET_KEYSTORE_FILE and WALLET_PASSPHRASE_FILE")
# The arbitrator resolves disputes and slashes stakes (ARBITRATOR_ROLE): a key of its own,
# never the platform wallet, which pays for the jobs it would judge. An encrypted keystore
# and its passphrase, both files; unset, the devnet's arbitrator key is used.
MARKETPLACE_ARBITRATOR_KEYSTORE_FILE = env_str("MARKETPLACE_ARBITRATOR_KEYSTORE_FILE") or None
MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE = env_str("MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE") or None
if bool(MARKETPLACE_ARBITRATOR_KEYSTORE_FILE) != bool(MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE):
    raise ImproperlyConfigured("set both MARKETPLACE_ARBITRATOR_KEYSTORE_FILE and "
                               "MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE")
MARKETPLACE_JOB_DEADLINE_S = env_int("MARKETPLACE_JOB_DEADLINE_S", 120)
# What one host may send us (docs/security.md, "Hostile hosts: bounded bytes"). Over any
# bound the host has failed and the job goes on with the next one.
# A message: a WebSocket frame, the same frame inflated, an HTTP answer's body.
MARKETPLACE_MAX_MESSAGE_BYTES = env_int("MARKETPLACE_MAX_MESSAGE_BYTES", 64 * 1024)
# How many times its compressed size a gzip frame may inflate to (honest frames: about 1).
MARKETPLACE_MAX_COMPRESSION_RATIO = env_int("MARKETPLACE_MAX_COMPRESSION_RATIO", 100)
# One token's text, and a whole job's (a model's token is a few characters).
MARKETPLACE_MAX_TOKEN_CHARS = env_int("MARKETPLACE_MAX_TOKEN_CHARS", 1024)
MARKETPLACE_MAX_JOB_CHARS = env_int("MARKETPLACE_MAX_JOB_CHARS", 256 * 1024)
# Silence from a streaming host for this long is a stall: the stream is resumed, and after
# its resumes the job goes on with the next host.
MARKETPLACE_STALL_TIMEOUT_S = env_int("MARKETPLACE_STALL_TIMEOUT_S", 15)
# Streams are encrypted end to end (protocol 3, docs/encryption.md). Off, the client
# speaks protocol 2 in clear: prompts and tokens readable by anyone on the path.
MARKETPLACE_STREAM_ENCRYPTION = env_bool("MARKETPLACE_STREAM_ENCRYPTION", True)
# Hosts reached over https/wss only, loopback and the operator's own hosts named in
# MARKETPLACE_ALLOWED_HOST_NETWORKS excepted: on in production.
MARKETPLACE_REQUIRE_TLS = env_bool("MARKETPLACE_REQUIRE_TLS", False)
# Ask hosts for gzip-compressed frames ("gzip") or plain ones (empty), on a plaintext
# stream only: compressing before encrypting tells an onlooker about the text, and a token
# is smaller than gzip's own header anyway.
MARKETPLACE_STREAM_COMPRESSION = env_str("MARKETPLACE_STREAM_COMPRESSION", "") or None
if MARKETPLACE_STREAM_COMPRESSION not in (None, "gzip"):
    raise ImproperlyConfigured("MARKETPLACE_STREAM_COMPRESSION must be gzip or empty")
if MARKETPLACE_STREAM_COMPRESSION and MARKETPLACE_STREAM_ENCRYPTION:
    raise ImproperlyConfigured("MARKETPLACE_STREAM_COMPRESSION needs "
                               "MARKETPLACE_STREAM_ENCRYPTION off: encrypted streams are "
                               "never compressed")
# The verifier (docs/trust.md, "Verification"): re-scores a host's tokens with the pinned
# weights before the result is accepted. "inline" checks on a thread of the process that
# ran the job; "celery" on a worker of the `verify` queue (celery -A config worker -Q verify).
MARKETPLACE_VERIFIER = env_str("MARKETPLACE_VERIFIER", "inline")
if MARKETPLACE_VERIFIER not in ("inline", "celery"):
    raise ImproperlyConfigured("MARKETPLACE_VERIFIER must be inline or celery")
# Every result of a host on probation is checked (fewer passed checks than this); after
# that, this percentage of its results, drawn once the result is in.
MARKETPLACE_VERIFY_PROBATION = env_int("MARKETPLACE_VERIFY_PROBATION", 5)
MARKETPLACE_VERIFY_PERCENT = env_int("MARKETPLACE_VERIFY_PERCENT", 100)
if not 0 <= MARKETPLACE_VERIFY_PERCENT <= 100:
    raise ImproperlyConfigured("MARKETPLACE_VERIFY_PERCENT must be 0 to 100")
MARKETPLACE_VERIFY_FRACTION = MARKETPLACE_VERIFY_PERCENT / 100
# The arbitrator's slash for a host whose result failed verification: this many times the
# job's escrow, taken from its stake (at most all of it) to the treasury.
MARKETPLACE_SLASH_MULTIPLE = env_int("MARKETPLACE_SLASH_MULTIPLE", 10)
# How long a job waits for its verdict before it goes on with the text checks alone.
MARKETPLACE_VERIFY_TIMEOUT_S = env_int("MARKETPLACE_VERIFY_TIMEOUT_S", 60)
# ---- Payment channels, the paying side (marketplace.channels, docs/sessions.md) ----------
# Pay hosts that take channels through one (off: every job posted on chain with escrow).
MARKETPLACE_CHANNELS = env_bool("MARKETPLACE_CHANNELS", True)
# The first prompt to a host with no channel yet: "wait" for the channel's open (one
# transaction), or go "per-job" (post, claim: two before the first token) while it opens.
MARKETPLACE_CHANNEL_FIRST_PROMPT = env_str("MARKETPLACE_CHANNEL_FIRST_PROMPT", "wait")
if MARKETPLACE_CHANNEL_FIRST_PROMPT not in ("wait", "per-job"):
    raise ImproperlyConfigured("MARKETPLACE_CHANNEL_FIRST_PROMPT must be wait or per-job")
# What the platform wallet deposits when it opens a channel to a host, and adds at each
# top-up.
MARKETPLACE_CHANNEL_DEPOSIT_WEI = env_int("MARKETPLACE_CHANNEL_DEPOSIT_WEI", 10**16)
MARKETPLACE_CHANNEL_TOP_UP_WEI = env_int("MARKETPLACE_CHANNEL_TOP_UP_WEI",
                                         MARKETPLACE_CHANNEL_DEPOSIT_WEI)
# Low water, in wei: a channel whose headroom (deposit - spent - reserved) falls below it
# is topped up. Wei rather than a fraction of the deposit, which grows with each top-up.
MARKETPLACE_CHANNEL_LOW_WATER_WEI = env_int("MARKETPLACE_CHANNEL_LOW_WATER_WEI",
                                            MARKETPLACE_CHANNEL_DEPOSIT_WEI // 4)
# A channel no stream has used for this long is exited (the deposit comes back after the
# contract's challenge period); so is a channel whose host left the registry.
MARKETPLACE_CHANNEL_IDLE_EXIT_S = env_int("MARKETPLACE_CHANNEL_IDLE_EXIT_S", 86400)
# How long a caller of channel_ensure waits for a channel another caller is opening.
MARKETPLACE_CHANNEL_OPEN_WAIT_S = env_int("MARKETPLACE_CHANNEL_OPEN_WAIT_S", 30)
# An open still unresolved after this long was cut short by a crash: the beat looks for
# its ChannelOpened event, and marks it FAILED when there is none.
MARKETPLACE_CHANNEL_OPENING_STALE_S = env_int("MARKETPLACE_CHANNEL_OPENING_STALE_S", 600)
# Headroom still reserved on a channel nothing has used for this long belongs to streams
# whose process died; the beat gives it back. Longer than any stream runs.
MARKETPLACE_CHANNEL_LEASE_MAX_S = env_int("MARKETPLACE_CHANNEL_LEASE_MAX_S", 3600)
if MARKETPLACE_CHANNEL_DEPOSIT_WEI <= 0 or MARKETPLACE_CHANNEL_TOP_UP_WEI <= 0:
    raise ImproperlyConfigured("MARKETPLACE_CHANNEL_DEPOSIT_WEI and "
                               "MARKETPLACE_CHANNEL_TOP_UP_WEI must be positive")
# A registered host URL must point at a public internet address. These host names and
# IP networks are let through although private: local hosts in development and tests, or
# an operator's own hosts on a private network. Its own list, apart from
# OUTBOUND_ALLOWED_HOSTS: letting our hosts' network in must not let users' webhooks in.
MARKETPLACE_ALLOWED_HOST_NETWORKS = env_hosts("MARKETPLACE_ALLOWED_HOST_NETWORKS", [])
# A host (manage.py runhost, docs/host.md) is a public server: what one stranger may hold.
# Defaults of runhost's flags; here rather than in settings.host because local hosts run
# under the dev and test settings too.
HOST_MAX_CONNECTIONS = env_int("HOST_MAX_CONNECTIONS", 256)
HOST_MAX_CONNECTIONS_PER_IP = env_int("HOST_MAX_CONNECTIONS_PER_IP", 32)
HOST_HANDSHAKE_TIMEOUT_S = env_int("HOST_HANDSHAKE_TIMEOUT_S", 10)
HOST_FAILED_HANDSHAKES_PER_MINUTE = env_int("HOST_FAILED_HANDSHAKES_PER_MINUTE", 20)
# Payment channels on the host (docs/sessions.md): unpaid work on a channel before the
# host waits for a voucher (wei; empty: 64 tokens at the host's price), the most tokens
# between a client's vouchers, and how long a stream waits for one before it ends.
HOST_CREDIT_LIMIT_WEI = env_int("HOST_CREDIT_LIMIT_WEI", 0) or None
HOST_VOUCHERS_EVERY = env_int("HOST_VOUCHERS_EVERY", 16)
HOST_PAYMENT_WAIT_S = env_int("HOST_PAYMENT_WAIT_S", 30)

# ---- Accounts and billing ------------------------------------------------------------
# Money is integer wei; multipliers and fees are basis points (10000 = 1.0), never floats.
# Free credit a new account starts with. It pays real escrow, so it is 0 unless asked for;
# the dev settings give 0.001 ETH to try things on the devnet.
ACCOUNTS_SIGNUP_CREDIT_WEI = env_int("ACCOUNTS_SIGNUP_CREDIT_WEI", 0)
# The chain's native coin as people see it (accounts.money): amounts are shown in it, prices
# per token in gwei. Set it on a chain whose coin is not ETH.
MONEY_SYMBOL = env_str("MONEY_SYMBOL", "ETH")
ACCOUNTS_PLATFORM_FEE_BPS = env_int("ACCOUNTS_PLATFORM_FEE_BPS", 2000)
ACCOUNTS_TIERS = {
    "free": {"requests_per_minute": env_int("ACCOUNTS_FREE_RPM", 10),
             "multiplier_bps": env_int("ACCOUNTS_FREE_MULTIPLIER_BPS", 20000)},
    "basic": {"requests_per_minute": env_int("ACCOUNTS_BASIC_RPM", 100),
              "multiplier_bps": env_int("ACCOUNTS_BASIC_MULTIPLIER_BPS", 15000)},
    "premium": {"requests_per_minute": env_int("ACCOUNTS_PREMIUM_RPM", 1000),
                "multiplier_bps": env_int("ACCOUNTS_PREMIUM_MULTIPLIER_BPS", 12000)},
}
# Where request counts live: Redis so limits hold across processes, else process memory.
ACCOUNTS_RATELIMIT_STORAGE_URL = (
    ("redis+" + REDIS_URL if REDIS_URL.startswith("unix:") else REDIS_URL) if REDIS_URL
    else "memory://")
# Live API keys one account may hold (limits count per account, whatever the keys).
ACCOUNTS_MAX_API_KEYS = env_int("ACCOUNTS_MAX_API_KEYS", 10)
# Accounts one client address may create an hour.
ACCOUNTS_SIGNUPS_PER_IP_PER_HOUR = env_int("ACCOUNTS_SIGNUPS_PER_IP_PER_HOUR", 5)
# An API key's last-used time is written at most this often (a write per request is waste).
ACCOUNTS_KEY_LAST_USED_INTERVAL_S = env_int("ACCOUNTS_KEY_LAST_USED_INTERVAL_S", 60)

# ---- Money in and out (docs/accounts.md#deposits-and-withdrawals) ----------------------
# The chain users sign in on and deposit to (Sign-In with Ethereum checks it).
FUNDS_CHAIN_ID = env_int("FUNDS_CHAIN_ID", 31337)
# A deposit is credited once its block has this many confirmations (its own block is 1).
FUNDS_CONFIRMATIONS = env_int("FUNDS_CONFIRMATIONS", 12)
if FUNDS_CONFIRMATIONS < 1:
    raise ImproperlyConfigured("FUNDS_CONFIRMATIONS must be at least 1")
# Deposits below this are credited all the same (it is the user's money) and flagged.
FUNDS_DEPOSIT_MIN_WEI = env_int("FUNDS_DEPOSIT_MIN_WEI", 10**14)
FUNDS_WITHDRAWAL_MIN_WEI = env_int("FUNDS_WITHDRAWAL_MIN_WEI", 10**14)
# Withdrawals of one account in any 24 hours, and the size above which staff approve one.
FUNDS_WITHDRAWAL_DAILY_LIMIT_WEI = env_int("FUNDS_WITHDRAWAL_DAILY_LIMIT_WEI", 10**18)
FUNDS_WITHDRAWAL_APPROVAL_WEI = env_int("FUNDS_WITHDRAWAL_APPROVAL_WEI", 10**17)
# How often the deposit watcher and the payout sweep run (Celery beat).
FUNDS_WATCH_INTERVAL_S = float(env_int("FUNDS_WATCH_INTERVAL_S", 5))
# A transaction's page on a block explorer; {tx} is replaced by its hash. Empty: no links.
FUNDS_EXPLORER_TX_URL = env_str("FUNDS_EXPLORER_TX_URL", "") or ""
# Sign-In with Ethereum: how long a nonce may wait for its signed message.
FUNDS_SIWE_NONCE_TTL_S = env_int("FUNDS_SIWE_NONCE_TTL_S", 600)
# What "Get test ETH" on the devnet gives.
FUNDS_FAUCET_WEI = env_int("FUNDS_FAUCET_WEI", 10**18)
CELERY_BEAT_SCHEDULE["watch-deposits"] = {"task": "marketplace.tasks.watch_deposits",
                                          "schedule": FUNDS_WATCH_INTERVAL_S}
CELERY_BEAT_SCHEDULE["send-payouts"] = {"task": "marketplace.tasks.send_payouts",
                                        "schedule": FUNDS_WATCH_INTERVAL_S}

# ---- Gateway -------------------------------------------------------------------------
# The JSON API under /v1 (gateway.api, docs/gateway.md).
GATEWAY_MODELS = env_list("GATEWAY_MODELS", MARKETPLACE_MODELS)
GATEWAY_WAIT_S = env_int("GATEWAY_WAIT_S", 60)  # then 202 with a job id to poll
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 10 * 1024 * 1024)
GATEWAY_MAX_PROMPT_CHARS = env_int("GATEWAY_MAX_PROMPT_CHARS", 16_000)
GATEWAY_MAX_TOKENS = env_int("GATEWAY_MAX_TOKENS", 4096)
GATEWAY_CACHE_TTL_S = env_int("GATEWAY_CACHE_TTL_S", 3600)
# Requests without a key are limited by client address at this tier's rate.
GATEWAY_ANONYMOUS_TIER = env_str("GATEWAY_ANONYMOUS_TIER", "free")
# Direct upstream mode: an OpenAI-compatible server answers instead of the marketplace,
# at this price per token, with no protocol fee.
GATEWAY_UPSTREAM_URL = env_url("GATEWAY_UPSTREAM_URL", {"http", "https"})
GATEWAY_UPSTREAM_PRICE_WEI = env_int("GATEWAY_UPSTREAM_PRICE_WEI", 10**9)
GATEWAY_UPSTREAM_TIMEOUT_S = env_int("GATEWAY_UPSTREAM_TIMEOUT_S", 120)
# Threads (each with its own database connection) for the gateway's ORM work.
GATEWAY_DB_THREADS = env_int("GATEWAY_DB_THREADS", 8)
# On PostgreSQL the hot path (key, reserve, settle, record) is one SQL statement a step,
# sent from the event loop on at most this many connections per process
# (gateway.books); off, it goes through the ORM like on SQLite.
GATEWAY_DIRECT_SQL = env_bool("GATEWAY_DIRECT_SQL", True)
GATEWAY_DB_CONNECTIONS = env_int("GATEWAY_DB_CONNECTIONS", 10)
# Whether the gateway's own statements (reserve, settle, request records) wait for their
# commit to reach the disk. Off: a crash of the database server may lose the last
# fraction of a second of them, always a suffix in commit order, so the platform, never
# a user, bears it (a lost settlement is released by the sweep: refunded). See
# docs/gateway.md, "Durability".
GATEWAY_SYNCHRONOUS_COMMIT = env_bool("GATEWAY_SYNCHRONOUS_COMMIT", False)
# POST /v1/inference and /v1/chat/completions through the ASGI handler's shorter way
# (config.handler: the same middleware and views, less of Django's request cycle).
GATEWAY_LANE = env_bool("GATEWAY_LANE", True)
# Milliseconds a process serves a billed request's API key as it read it, without a query
# (gateway.keys, "Reuse": the reservation still refuses a key revoked since). 0: never.
GATEWAY_KEY_REUSE_MS = env_int("GATEWAY_KEY_REUSE_MS", 1000)
# The till (docs/gateway.md, "Money: the till"): a /v1 request's money reserved and
# settled in Redis by one script each, the ledger's rows written behind in batches. Needs
# Redis and the direct SQL path (PostgreSQL). A settled request's answer waits for its
# rows to be written, at most GATEWAY_TILL_WAIT_MS (a PostgreSQL that stalls longer holds
# no answer); mirrors idle GATEWAY_TILL_IDLE_S go back. Off by default: measured at
# 200 req/s it costs more than one SQL statement each way (docs/gateway.md).
GATEWAY_TILL = env_bool("GATEWAY_TILL", False)
GATEWAY_TILL_WAIT_MS = env_int("GATEWAY_TILL_WAIT_MS", 250)
GATEWAY_TILL_IDLE_S = env_int("GATEWAY_TILL_IDLE_S", 300)
# Before the session and CSRF middleware: over-limit and oversized requests stop here.
MIDDLEWARE.insert(MIDDLEWARE.index("observability.logging.RequestIdMiddleware") + 1,
                  "gateway.api.middleware.GatewayMiddleware")

# ---- Batches -------------------------------------------------------------------------
# POST /v1/batch (gateway.batch, docs/batches.md).
BATCH_MAX_ITEMS = env_int("BATCH_MAX_ITEMS", 100)
# Items a worker task runs together on its event loop (a host decodes 4 jobs at once).
BATCH_ITEMS_PER_TASK = env_int("BATCH_ITEMS_PER_TASK", 4)
BATCH_ITEM_TIMEOUT_S = env_int("BATCH_ITEM_TIMEOUT_S", 300)
# A claim is held this much longer than an item may run; a worker that died loses it then.
BATCH_LEASE_GRACE_S = env_int("BATCH_LEASE_GRACE_S", 60)
BATCH_ITEM_MAX_ATTEMPTS = env_int("BATCH_ITEM_MAX_ATTEMPTS", 5)
BATCH_RETRY_BASE_S = env_int("BATCH_RETRY_BASE_S", 10)  # then 20 s, 40 s, ...
# A queued item nobody took for this long is sent to the workers again (beat sweep).
BATCH_STUCK_AFTER_S = env_int("BATCH_STUCK_AFTER_S", 120)
# Retried although the gateway calls them permanent: nobody waits on a batch item, and
# these pass by themselves (hosts back, the chain back).
BATCH_RETRY_CODES = frozenset({"NO_HOSTS_AVAILABLE", "RPC_UNAVAILABLE", "TIMEOUT"})
# Never retried, when an error does not say whether it is permanent.
BATCH_PERMANENT_CODES = frozenset({
    "INSUFFICIENT_FUNDS", "UNKNOWN_MODEL", "INVALID_MODEL", "PROMPT_TOO_LONG",
    "INVALID_REQUEST", "INVALID_MAX_TOKENS", "INVALID_TEMPERATURE", "CANCELLED", "BLOCKED",
    "QUOTA_EXCEEDED", "REFERENCE_IN_USE", "RESERVATION_CLOSED", "INVALID_AMOUNT"})
CELERY_BEAT_SCHEDULE["batch-items-sweep"] = {
    "task": "marketplace.gateway.tasks.batch_items_sweep",
    "schedule": float(env_int("BATCH_SWEEP_INTERVAL_S", 60))}

# ---- Outbound requests ------------------------------------------------------------------
# URLs someone else chose (webhooks) may reach only public internet addresses (outbound,
# docs/security.md). These host names and IP networks are let through although they are
# private: for development and tests, whose receivers run on loopback. Empty in production.
OUTBOUND_ALLOWED_HOSTS = env_hosts("OUTBOUND_ALLOWED_HOSTS", [])

# ---- Operations ------------------------------------------------------------------------
# Background work, health and metrics (docs/operations.md).
# A job not written to for this long has lost its process; the chain watcher closes it.
OPS_ORPHAN_AFTER_S = env_int("OPS_ORPHAN_AFTER_S", 300)
# Money still held this long after it was reserved belongs to a job that never ended.
OPS_RESERVATION_MAX_AGE_S = env_int("OPS_RESERVATION_MAX_AGE_S", 2 * 3600)
# /health: fewer answering hosts than this is unhealthy (0 lets a product with no hosts
# of its own yet report healthy).
OPS_HEALTH_MIN_HOSTS = env_int("OPS_HEALTH_MIN_HOSTS", 1)
OPS_HEALTH_MODELS = env_list("OPS_HEALTH_MODELS", ["smollm2-135m-instruct"])
# The chain and the hosts are probed by a beat task, never by a request (an anonymous
# flood of /health would otherwise become a flood of RPC calls and host probes); requests
# read the stored result, which fails once older than OPS_HEALTH_STALE_S.
OPS_HEALTH_PROBE_INTERVAL_S = float(env_int("OPS_HEALTH_PROBE_INTERVAL_S", 0)
                                    or OPS_BEAT_INTERVAL_S)
OPS_HEALTH_STALE_S = float(env_int("OPS_HEALTH_STALE_S", 0) or 3 * OPS_HEALTH_PROBE_INTERVAL_S)
if OPS_HEALTH_STALE_S <= OPS_HEALTH_PROBE_INTERVAL_S:
    raise ImproperlyConfigured("OPS_HEALTH_STALE_S must exceed OPS_HEALTH_PROBE_INTERVAL_S, "
                               "or every result would be stale before the next probe")
# A probe nobody ran within its interval is dropped: the next one says more.
CELERY_BEAT_SCHEDULE["health-probe"] = {"task": "marketplace.tasks.health_probe",
                                        "schedule": OPS_HEALTH_PROBE_INTERVAL_S,
                                        "options": {"expires": OPS_HEALTH_PROBE_INTERVAL_S}}
# /metrics answers only to `Authorization: Bearer <METRICS_TOKEN>` (or METRICS_TOKEN_FILE);
# the same token shows /health's details. Without a token, /metrics is open only when
# METRICS_ALLOW_ANONYMOUS says so (development; production refuses both).
METRICS_TOKEN = env_secret("METRICS_TOKEN")
METRICS_ALLOW_ANONYMOUS = env_bool("METRICS_ALLOW_ANONYMOUS", False)
# The health summary says degraded below this success rate over the last hour.
OPS_DEGRADED_BELOW = 0.95
# How long a worker holds a job's processing or a webhook's delivery before another may
# take it over (the holder is presumed dead).
OPS_LEASE_S = env_int("OPS_LEASE_S", 300)
WEBHOOK_STUCK_AFTER_S = env_int("WEBHOOK_STUCK_AFTER_S", 300)
# Workers log through LOGGING above (JSON lines with the task and the job), not Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
if REDIS_URL:
    # A task taken by a worker that dies unacknowledged goes back to the queue after the
    # visibility timeout; it must exceed the longest countdown any task is retried with.
    _visibility_s = env_int("CELERY_VISIBILITY_TIMEOUT_S", 3600)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": _visibility_s,
        "unacked_restore_interval": min(10, _visibility_s),
        "unacked_restore_throttle": 1,
    }

# ---- Discord -------------------------------------------------------------------------
# The bot (discordbot, docs/discord.md). `manage.py runbot` reads its token from this
# file, never from code or a plain variable.
DISCORD_TOKEN_FILE = env_str("DISCORD_TOKEN_FILE") or None
# Requests (jobs) one Discord user may start an hour, across servers.
DISCORD_REQUESTS_PER_HOUR = env_int("DISCORD_REQUESTS_PER_HOUR", 10)
# Jobs kept per user for !history.
DISCORD_HISTORY_KEEP = env_int("DISCORD_HISTORY_KEEP", 100)
# Tokens an answer to !ask, /ask or a mention may have.
DISCORD_ASK_MAX_TOKENS = env_int("DISCORD_ASK_MAX_TOKENS", 256)
# Earlier turns of a channel's conversation sent with an answer to a mention.
DISCORD_CHAT_TURNS = env_int("DISCORD_CHAT_TURNS", 6)
