import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import database_config, env_bool, env_int, env_secret, env_url

ROOT = Path(__file__).resolve().parents[2]


def _boot(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Start Django with the given environment, as a fresh process would."""
    full = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    full.update({"SECRET_KEY": "x" * 60, "DJANGO_SETTINGS_MODULE": "config.settings.base"})
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT, env=full, capture_output=True, text=True, timeout=60,
    )


def test_it_refuses_to_start_with_a_malformed_database_url():
    result = _boot({"DATABASE_URL": "mysql//nobody@nowhere"})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DATABASE_URL" in result.stderr


def test_it_starts_with_a_well_formed_database_url():
    result = _boot({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/inkmarket"})
    assert result.returncode == 0, result.stderr


def test_a_database_url_with_a_bad_port_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db:notaport/app")
    with pytest.raises(ImproperlyConfigured, match="malformed port"):
        env_url("DATABASE_URL", {"postgres"})


def test_a_database_url_without_a_database_name_is_rejected():
    with pytest.raises(ImproperlyConfigured, match="names no database"):
        database_config("postgres://u@db:5432/", sqlite_path=Path("/tmp/x.db"))


def test_no_database_url_means_a_sqlite_file(tmp_path):
    config = database_config(None, sqlite_path=tmp_path / "db.sqlite3")
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(tmp_path / "db.sqlite3")


def test_a_postgres_url_becomes_a_postgres_config():
    config = database_config("postgres://alice:pw@db.example:6543/app", sqlite_path=Path("x"))
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db.example", 6543, "app")


def test_a_boolean_that_is_not_a_boolean_is_rejected(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG must be a boolean"):
        env_bool("DEBUG")


def test_an_integer_that_is_not_an_integer_is_rejected(monkeypatch):
    monkeypatch.setenv("WORKERS", "four")
    with pytest.raises(ImproperlyConfigured, match="WORKERS must be an integer"):
        env_int("WORKERS", 1)


def test_a_secret_can_come_from_a_file(tmp_path, monkeypatch):
    secret = tmp_path / "key"
    secret.write_text("s3cret\n")
    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.setenv("API_TOKEN_FILE", str(secret))
    assert env_secret("API_TOKEN") == "s3cret"


def test_a_secret_file_that_cannot_be_read_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.setenv("API_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="API_TOKEN_FILE"):
        env_secret("API_TOKEN")


def test_a_redis_url_with_the_wrong_scheme_is_rejected():
    result = _boot({"REDIS_URL": "http://127.0.0.1:6379"})
    assert result.returncode != 0
    assert "REDIS_URL has scheme 'http'" in result.stderr


PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "SECRET_KEY": "k7#Qz!v9@pX2$wR5^mL8&nB3*cF6(hJ1)tY4_gD0+eS7-aU2=iO9",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/inkmarket",
    "REDIS_URL": "redis://127.0.0.1:6379/15",
    "CHAIN_RPC_URL": "https://rpc.example-chain.org",
    "ALLOWED_HOSTS": "inkmarket.example",
    "METRICS_TOKEN": "m3tr1cs-t0ken-0f-at-least-32-characters",
}


def _production(env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "CHAIN_RPC_URL",
                         "WALLET_KEYSTORE_FILE", "WALLET_PASSPHRASE_FILE",
                         "MARKETPLACE_ARBITRATOR_KEYSTORE_FILE",
                         "MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE",
                         "METRICS_TOKEN", "METRICS_TOKEN_FILE", "METRICS_ALLOW_ANONYMOUS"}}
    full.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run(
        [sys.executable, "manage.py", *(command or ("check", "--deploy", "--fail-level",
                                                    "WARNING"))],
        cwd=ROOT, env=full, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def wallet(tmp_path) -> dict[str, str]:
    """The platform wallet's files and the arbitrator's (settings check they exist;
    nothing here decrypts)."""
    files = {}
    for prefix, name in (("WALLET", "wallet"), ("MARKETPLACE_ARBITRATOR", "arbitrator")):
        keystore, passphrase = tmp_path / f"{name}.json", tmp_path / f"{name}-passphrase"
        keystore.write_text("{}")
        passphrase.write_text("not used by the check")
        files[f"{prefix}_KEYSTORE_FILE"] = str(keystore)
        files[f"{prefix}_PASSPHRASE_FILE"] = str(passphrase)
    return files


def test_production_settings_pass_the_deploy_check(wallet):
    result = _production({**PRODUCTION, **wallet})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_production_reads_the_database_and_redis_urls_and_the_keys_from_files(tmp_path, wallet):
    names = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "METRICS_TOKEN")
    for name in names:
        (tmp_path / name).write_text(PRODUCTION[name] + "\n")
    env = {**PRODUCTION, **wallet, **{name: None for name in names},
           **{f"{name}_FILE": str(tmp_path / name) for name in names}}
    result = _production(env, "shell", "-c", "from django.conf import settings as s; "
                         "print(s.DATABASES['default']['NAME'], s.REDIS_URL, s.METRICS_TOKEN)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == [
        "inkmarket", "redis://127.0.0.1:6379/15", PRODUCTION["METRICS_TOKEN"]]


@pytest.mark.parametrize(("change", "message"), [
    ({"CHAIN_RPC_URL": None}, "CHAIN_RPC_URL must be set in production"),
    ({"DATABASE_URL": None}, "DATABASE_URL must be a PostgreSQL URL"),
    ({"REDIS_URL": None}, "REDIS_URL must be set in production"),
    ({"SECRET_KEY": "short"}, "SECRET_KEY must be at least 50 characters"),
    ({"DEBUG": "1"}, "DEBUG must be off in production"),
    ({"METRICS_TOKEN": None}, "METRICS_TOKEN (or METRICS_TOKEN_FILE) must be set in production"),
    ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN must be at least 32 characters"),
    ({"METRICS_ALLOW_ANONYMOUS": "1"}, "METRICS_ALLOW_ANONYMOUS must be off in production"),
    ({"MARKETPLACE_STREAM_ENCRYPTION": "0"},
     "MARKETPLACE_REQUIRE_TLS and MARKETPLACE_STREAM_ENCRYPTION must be on in production"),
    ({"MARKETPLACE_REQUIRE_TLS": "0"},
     "MARKETPLACE_REQUIRE_TLS and MARKETPLACE_STREAM_ENCRYPTION must be on in production"),
    ({"WALLET_KEYSTORE_FILE": "/nonexistent/keystore.json",
      "WALLET_PASSPHRASE_FILE": "/nonexistent/passphrase"}, "is not a readable file"),
    ({"MARKETPLACE_ARBITRATOR_KEYSTORE_FILE": "/nonexistent/arbitrator.json"},
     "MARKETPLACE_ARBITRATOR_KEYSTORE_FILE='/nonexistent/arbitrator.json' is not a readable file"),
])
def test_production_refuses_to_start_without_what_it_needs(change, message, wallet):
    result = _production({**PRODUCTION, **wallet, **change}, "check")
    assert result.returncode != 0
    assert message in result.stderr


def test_production_refuses_to_start_without_a_wallet_of_its_own():
    """Without one, the platform would sign with the devnet's key, which anyone has."""
    result = _production(PRODUCTION, "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured: WALLET_KEYSTORE_FILE and WALLET_PASSPHRASE_FILE must be set " \
        "in production" in result.stderr


def test_production_refuses_to_start_without_an_arbitrator_key_of_its_own(wallet):
    """Disputes are judged by the arbitrator's own key: never the devnet's public one."""
    result = _production({**PRODUCTION, **wallet, "MARKETPLACE_ARBITRATOR_KEYSTORE_FILE": None,
                          "MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE": None}, "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured: MARKETPLACE_ARBITRATOR_KEYSTORE_FILE and " \
        "MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE must be set in production" in result.stderr


def test_production_refuses_the_platform_wallet_as_the_arbitrator(wallet):
    """The wallet that pays for jobs never judges their disputes."""
    result = _production({**PRODUCTION, **wallet,
                          "MARKETPLACE_ARBITRATOR_KEYSTORE_FILE": wallet["WALLET_KEYSTORE_FILE"],
                          "MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE":
                              wallet["WALLET_PASSPHRASE_FILE"]}, "check")
    assert result.returncode != 0
    assert "is the platform wallet's keystore" in result.stderr


def test_production_refuses_a_keystore_without_its_passphrase_file(wallet):
    result = _production({**PRODUCTION, **wallet, "WALLET_PASSPHRASE_FILE": None}, "check")
    assert result.returncode != 0
    assert "set both WALLET_KEYSTORE_FILE and WALLET_PASSPHRASE_FILE" in result.stderr


def test_host_settings_need_a_chain_but_no_database_or_redis(tmp_path):
    env = {"DJANGO_SETTINGS_MODULE": "config.settings.host", "VAR_DIR": str(tmp_path),
           "SECRET_KEY": PRODUCTION["SECRET_KEY"], "CHAIN_RPC_URL": "https://rpc.example"}
    result = _production(env, "runhost", "--help")
    assert result.returncode == 0, result.stderr
    result = _production({**env, "CHAIN_RPC_URL": None}, "runhost", "--help")
    assert result.returncode != 0
    assert "CHAIN_RPC_URL must be set on a host" in result.stderr


def test_the_asgi_application_freezes_what_start_up_made():
    """config.asgi moves start-up's objects out of the collector's sight, so a full
    collection does not walk them (a pause on the event loop of 100 ms or more)."""
    found = subprocess.run(
        [sys.executable, "-c", "import gc, config.asgi; print(gc.get_freeze_count())"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
        timeout=120, env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"})
    assert found.returncode == 0, found.stderr[-2000:]
    assert int(found.stdout.split()[-1]) > 50_000


def _setting(module: str, name: str, env: dict[str, str]) -> str:
    """A setting as a fresh process under `module` reads it, with none of this process's
    overrides of it."""
    full = {k: v for k, v in os.environ.items()
            if k not in {name, "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "CHAIN_RPC_URL",
                         "WALLET_KEYSTORE_FILE", "WALLET_PASSPHRASE_FILE",
                         "MARKETPLACE_ARBITRATOR_KEYSTORE_FILE",
                         "MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE", "METRICS_TOKEN"}}
    full.update({"SECRET_KEY": "x" * 60, **env, "DJANGO_SETTINGS_MODULE": module})
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import "
         f"settings; print(settings.{name})"],
        cwd=ROOT, env=full, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_sign_ups_get_no_credit_outside_the_dev_settings(wallet, tmp_path):
    assert _setting("config.settings.base", "ACCOUNTS_SIGNUP_CREDIT_WEI", {}) == "0"
    assert _setting("config.settings.production", "ACCOUNTS_SIGNUP_CREDIT_WEI",
                    {**PRODUCTION, **wallet}) == "0"
    assert _setting("config.settings.dev", "ACCOUNTS_SIGNUP_CREDIT_WEI",
                    {"VAR_DIR": str(tmp_path)}) == str(10**15)
    assert _setting("config.settings.base", "MONEY_SYMBOL", {}) == "ETH"
    assert _setting("config.settings.base", "MONEY_SYMBOL", {"MONEY_SYMBOL": "xDAI"}) == "xDAI"
