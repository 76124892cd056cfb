import pytest

from accounts.models import Account, EntryKind, LedgerEntry, User
from accounts.services import api_key_create, balance_reserve
from tests.accounts.conftest import CREDIT

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, db):
    boss = User.objects.create_superuser(username="boss", email="b@example.com", password="x")
    client.force_login(boss)
    return client


def test_the_user_list_shows_tier_and_balance_and_filters_by_tier(admin_client, alice):
    page = admin_client.get("/admin/accounts/user/?account__tier__exact=free").content.decode()
    assert "alice" in page and "0.001 ETH" in page


def test_every_accounts_admin_page_renders(admin_client, alice):
    key, _ = api_key_create(user=alice, name="k")
    balance_reserve(alice.account, amount_wei=5, reference="job:admin")
    entry = LedgerEntry.objects.first()
    for url in ("/admin/accounts/user/", f"/admin/accounts/user/{alice.pk}/change/",
                "/admin/accounts/account/", f"/admin/accounts/account/{alice.account.pk}/change/",
                "/admin/accounts/apikey/", f"/admin/accounts/apikey/{key.pk}/change/",
                "/admin/accounts/apikey/?revoked_at__isempty=1",
                "/admin/accounts/reservation/", "/admin/accounts/ledgerentry/?kind=reserve",
                f"/admin/accounts/ledgerentry/{entry.pk}/change/",
                "/admin/accounts/ledgerentry/?q=alice"):
        assert admin_client.get(url).status_code == 200, url


def test_the_key_hash_is_never_shown_in_admin(admin_client, alice):
    key, raw = api_key_create(user=alice, name="k")
    page = admin_client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    assert key.key_hash not in page and raw not in page
    assert key.prefix in page


def test_ledger_entries_are_read_only_in_admin(admin_client, alice):
    entry = LedgerEntry.objects.first()
    assert admin_client.get("/admin/accounts/ledgerentry/add/").status_code == 403
    admin_client.post(f"/admin/accounts/ledgerentry/{entry.pk}/delete/", {"post": "yes"})
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


def test_staff_change_the_tier_and_adjust_the_balance_with_a_ledger_entry(admin_client, alice):
    url = f"/admin/accounts/account/{alice.account.pk}/change/"
    response = admin_client.post(url, {"tier": "premium", "adjust_wei": "-100",
                                       "adjust_memo": "refund of a bad answer"})
    assert response.status_code == 302
    account = Account.objects.get(pk=alice.account.pk)
    assert (account.tier, account.balance_wei) == ("premium", CREDIT - 100)
    entry = account.entries.get(kind=EntryKind.ADJUSTMENT)
    assert (entry.amount_wei, entry.memo) == (-100, "refund of a bad answer")


def test_an_adjustment_without_a_reason_is_refused(admin_client, alice):
    url = f"/admin/accounts/account/{alice.account.pk}/change/"
    response = admin_client.post(url, {"tier": "free", "adjust_wei": "5", "adjust_memo": ""})
    assert response.status_code == 200
    assert "Say why the balance is adjusted." in response.content.decode()
    assert Account.objects.get(pk=alice.account.pk).balance_wei == CREDIT


def test_admins_revoke_keys_in_bulk(admin_client, alice):
    keys = [api_key_create(user=alice, name=f"k{i}").key for i in range(3)]
    admin_client.post("/admin/accounts/apikey/", {
        "action": "revoke", "_selected_action": [k.pk for k in keys[:2]]})
    assert [k.__class__.objects.get(pk=k.pk).revoked_at is not None for k in keys] == [
        True, True, False]
