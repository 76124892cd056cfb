"""Strangers' records: oversized, malformed, forged, expired, from the wrong peer, or too
many from one peer are ignored and counted."""

from __future__ import annotations

import json
import os
import time

import pytest
from eth_account import Account

from marketplace.p2p.gate import RegistryGate
from marketplace.p2p.lightweight import capabilities
from marketplace.p2p.node import Node, key_pair, peer_address
from marketplace.p2p.records import BadRecord, HostRecord, sign, verify
from marketplace.p2p.view import Limits, View
from observability.metrics import p2p_rate_limited, p2p_records_rejected

MODEL = "smollm2-135m-instruct"
LIMITS = dict(max_bytes=8192, max_ttl_s=600)


def record(key: bytes, **changes) -> HostRecord:
    address = Account.from_key(key).address
    fields = dict(address=address, url="http://127.0.0.1:9101",
                  capabilities=capabilities(address, MODEL, 10**9), seq=1,
                  issued_at=int(time.time()), ttl_s=30)
    return HostRecord(**{**fields, **changes})


def peer_of(key: bytes) -> str:
    from libp2p.peer.id import ID

    return ID.from_pubkey(key_pair(key).public_key).to_base58()


def rejected(reason: str) -> float:
    return p2p_records_rejected.labels(reason)._value.get()


def test_a_peer_id_names_the_address_of_the_chain_key_it_was_made_from():
    key = os.urandom(32)
    assert peer_address(peer_of(key)) == Account.from_key(key).address
    assert peer_address("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N") is None  # RSA-era id


def test_a_signed_record_reads_back():
    key = os.urandom(32)
    found = verify(sign(record(key), key), **LIMITS)
    assert found.address == Account.from_key(key).address
    assert found.prices() == {MODEL: 10**9}


def test_a_record_signed_by_another_key_is_refused():
    key, other = os.urandom(32), os.urandom(32)
    with pytest.raises(BadRecord) as caught:
        verify(sign(record(key), other), **LIMITS)
    assert caught.value.reason == "signature"


def test_a_record_changed_after_signing_is_refused():
    key = os.urandom(32)
    outer = json.loads(sign(record(key), key))
    outer["record"] = outer["record"].replace('"seq":1', '"seq":2')
    with pytest.raises(BadRecord) as caught:
        verify(json.dumps(outer).encode(), **LIMITS)
    assert caught.value.reason == "signature"


@pytest.mark.parametrize("changes", [
    {"issued_at": int(time.time()) - 31},  # its time to live has passed
    {"issued_at": int(time.time()) + 3600},  # from the future
])
def test_an_expired_record_is_refused(changes):
    key = os.urandom(32)
    with pytest.raises(BadRecord) as caught:
        verify(sign(record(key, **changes), key), **LIMITS)
    assert caught.value.reason == "expired"


def test_a_record_that_would_live_too_long_is_refused():
    key = os.urandom(32)
    with pytest.raises(BadRecord) as caught:
        verify(sign(record(key, ttl_s=10**6), key), **LIMITS)
    assert caught.value.reason == "malformed"


def test_an_oversized_record_is_refused_before_it_is_read():
    key = os.urandom(32)
    body = capabilities(Account.from_key(key).address, MODEL, 1)
    body["padding"] = "x" * 10_000
    with pytest.raises(BadRecord) as caught:
        verify(sign(record(key, capabilities=body), key), **LIMITS)
    assert caught.value.reason == "oversized"


@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b"[]", b'{"record": 1, "sig": 2}',
                                  b'{"record": "{}", "sig": "0x"}', b"{" * 5000])
def test_garbage_is_refused_as_malformed(data):
    with pytest.raises(BadRecord) as caught:
        verify(data, **LIMITS)
    assert caught.value.reason in {"malformed", "oversized"}


def test_the_view_counts_and_drops_bad_records_and_records_from_the_wrong_peer():
    view = View(private_key=os.urandom(32), bootstrap=[], gate=RegistryGate())
    key, other = os.urandom(32), os.urandom(32)
    good = sign(record(key), key)
    before = {r: rejected(r) for r in ("peer", "signature", "oversized", "expired")}
    assert view.take(good, peer_of(other)) is None  # relayed as if it were another's own
    assert view.take(sign(record(key), other), peer_of(key)) is None
    assert view.take(b"x" * 9000, peer_of(key)) is None
    assert view.take(sign(record(key, issued_at=1), key), peer_of(key)) is None
    assert {r: rejected(r) - before[r] for r in before} == {
        "peer": 1, "signature": 1, "oversized": 1, "expired": 1}
    assert view.records(MODEL) == []
    assert view.take(good, peer_of(key)) is not None
    assert [r.address for r in view.records(MODEL)] == [Account.from_key(key).address]


def test_an_older_record_never_replaces_a_newer_one():
    view = View(private_key=os.urandom(32), bootstrap=[], gate=RegistryGate())
    key = os.urandom(32)
    view.take(sign(record(key, seq=5, capabilities=capabilities(
        Account.from_key(key).address, MODEL, 7)), key), peer_of(key))
    view.take(sign(record(key, seq=4), key), peer_of(key))
    assert view.records(MODEL)[0].prices() == {MODEL: 7}


def test_the_store_is_bounded():
    view = View(private_key=os.urandom(32), bootstrap=[], gate=RegistryGate(),
                limits=Limits(max_records=3))
    keys = [os.urandom(32) for _ in range(5)]
    for key in keys:
        view.take(sign(record(key), key), peer_of(key))
    assert {r.address for r in view.records(MODEL)} == {
        Account.from_key(k).address for k in keys[-3:]}


def test_a_peer_flooding_gossip_is_rate_limited():
    """A real publisher floods a real subscriber's topic; what passes is its rate."""
    limits = Limits(per_peer_per_minute=5)
    view = View(private_key=os.urandom(32), bootstrap=[], gate=RegistryGate(),
                limits=limits).start()
    key = os.urandom(32)
    flooder = Node(private_key=key, bootstrap=view.node.addrs).start()
    try:
        from marketplace.p2p.records import model_topic

        topic = model_topic(MODEL)
        view.node.subscribe(topic)
        flooder.subscribe(topic)
        time.sleep(2)  # subscriptions exchanged, mesh formed
        before = p2p_rate_limited.labels("gossip")._value.get()
        taken = []
        original = view.take
        view.take = lambda data, peer: taken.append(peer) or original(data, peer)
        for seq in range(1, 41):
            flooder.publish(topic, sign(record(key, seq=seq), key))
        time.sleep(2)
        assert 1 <= len(taken) <= limits.per_peer_per_minute
        # The rest were dropped and counted here, or earlier by gossipsub's own spam
        # protection (10 messages a topic a second).
        assert p2p_rate_limited.labels("gossip")._value.get() - before >= 1
    finally:
        flooder.stop()
        view.stop()
