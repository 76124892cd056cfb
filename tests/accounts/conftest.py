"""Named users for the accounts tests: alice and bob have accounts with the sign-up
credit; charlie may not see or touch their keys or money."""

import pytest

from accounts.services import user_create

CREDIT = 10**15


@pytest.fixture(autouse=True)
def signup_credit(settings):
    settings.ACCOUNTS_SIGNUP_CREDIT_WEI = CREDIT
    return CREDIT


@pytest.fixture
def alice(db):
    return user_create(username="alice", email="alice@example.com", password="a-long-password-1")


@pytest.fixture
def bob(db):
    return user_create(username="bob", email="bob@example.com", password="a-long-password-2")


@pytest.fixture
def charlie(db):
    return user_create(username="charlie", email="charlie@example.com",
                       password="a-long-password-3")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def charlie_client(client, charlie):
    client.force_login(charlie)
    return client
