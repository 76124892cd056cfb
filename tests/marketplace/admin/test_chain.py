import pytest

from marketplace.models import ChainTransaction

pytestmark = pytest.mark.django_db


@pytest.fixture
def transactions():
    rows = [
        ChainTransaction.objects.create(
            tx_hash="0x" + f"{i:064x}", chain_id=31337, account="0x" + "a" * 40,
            contract="JobMarketplace", function=function, args="1, 'smollm2'", nonce=i,
            status=status, gas_used=50_000)
        for i, (function, status) in enumerate([("postJob", "mined"), ("claimJob", "reverted")])
    ]
    return rows


def test_the_audit_trail_is_searchable_by_hash(admin_client, transactions):
    wanted = transactions[1].tx_hash
    page = admin_client.get("/admin/marketplace/chaintransaction/", {"q": wanted})
    assert page.status_code == 200
    assert wanted in page.content.decode()
    assert transactions[0].tx_hash not in page.content.decode()


def test_the_audit_trail_filters_by_status(admin_client, transactions):
    page = admin_client.get("/admin/marketplace/chaintransaction/", {"status": "reverted"})
    assert page.status_code == 200
    assert transactions[1].tx_hash in page.content.decode()
    assert transactions[0].tx_hash not in page.content.decode()


def test_the_audit_trail_cannot_be_added_to_or_deleted_from_by_hand(admin_client,
                                                                     transactions):
    assert admin_client.get("/admin/marketplace/chaintransaction/add/").status_code == 403
    row = transactions[0]
    url = f"/admin/marketplace/chaintransaction/{row.pk}/delete/"
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert ChainTransaction.objects.filter(pk=row.pk).exists()
    change = admin_client.post(f"/admin/marketplace/chaintransaction/{row.pk}/change/",
                               {"status": "mined", "gas_used": 1})
    row.refresh_from_db()
    assert change.status_code == 302  # every field is read-only: nothing to save
    assert row.gas_used == 50_000
