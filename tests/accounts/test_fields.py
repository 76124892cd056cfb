"""WeiField keeps every digit on PostgreSQL and on SQLite (the embedded default)."""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLite

from accounts.fields import WeiField
from accounts.models import Account

BIG = 2**256 - 1  # the largest uint256: 78 digits


def round_trip(conn, value):
    field = WeiField()
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE wei_check (v {field.db_type(conn)})")
        try:
            cursor.execute("INSERT INTO wei_check (v) VALUES (%s)",
                           [field.get_db_prep_value(value, conn)])
            cursor.execute("SELECT v FROM wei_check")
            return field.from_db_value(cursor.fetchone()[0], None, conn)
        finally:
            cursor.execute("DROP TABLE wei_check")


@pytest.mark.django_db
@pytest.mark.parametrize("value", [0, 1, 1_234_567_890_123_456_789, BIG, -BIG])
def test_postgresql_keeps_every_digit(value):
    assert connection.vendor == "postgresql"
    assert round_trip(connection, value) == value


@pytest.mark.parametrize("value", [0, 1, 1_234_567_890_123_456_789, BIG, -BIG])
def test_sqlite_keeps_every_digit(value, django_db_blocker):
    sqlite = SQLite({"NAME": ":memory:", "ENGINE": "django.db.backends.sqlite3",
                     "OPTIONS": {}, "TIME_ZONE": None, "CONN_MAX_AGE": 0,
                     "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True, "ATOMIC_REQUESTS": False,
                     "USER": "", "PASSWORD": "", "HOST": "", "PORT": "", "TEST": {}})
    try:
        with django_db_blocker.unblock():
            assert round_trip(sqlite, value) == value
    finally:
        sqlite.close()


@pytest.mark.django_db
def test_amounts_come_back_as_ints(alice):
    account = Account.objects.get(pk=alice.account.pk)
    assert type(account.balance_wei) is int


def test_fractions_of_a_wei_and_numbers_too_long_are_refused():
    field = WeiField()
    with pytest.raises(ValidationError):
        field.to_python("1.5")
    assert field.to_python("12") == 12
    with pytest.raises(ValueError):
        field.get_db_prep_value(10**78, connection)
