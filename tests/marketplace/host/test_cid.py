import hashlib

import pytest

from marketplace.host.cid import ResultStore, cid_for, digest_of_cid


def test_the_cid_of_hello_world_is_the_one_ipfs_gives():
    # `ipfs add --cid-version 1 --raw-leaves` of the 11 bytes "hello world".
    assert cid_for(b"hello world") == (
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e")


def test_a_cid_carries_the_sha256_of_its_content():
    data = "A quiet morning, ünïcödé and all.".encode()
    assert digest_of_cid(cid_for(data)) == hashlib.sha256(data).digest()


def test_something_that_is_not_a_raw_sha256_cid_is_rejected():
    with pytest.raises(ValueError):
        digest_of_cid("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi")


def test_the_store_returns_what_it_was_given_and_notices_tampering(tmp_path):
    store = ResultStore(tmp_path)
    cid = store.put(b"sealed bytes")
    assert store.get(cid) == b"sealed bytes"
    (tmp_path / cid).write_bytes(b"other bytes")
    with pytest.raises(ValueError):
        store.get(cid)
