"""marketplace.e2e: the scheme, its published vectors, and each frame it must refuse."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account

from marketplace import e2e
from marketplace.e2e_vectors import vectors
from marketplace.host.cid import cid_for

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "encryption-vectors.json"
ADDRESS = Account.from_key(b"\x11" * 32).address


def pair(job_id: int = 7, nonce: str = "ab" * 16):
    host = e2e.private_key(b"\x11" * 32)
    info = e2e.info(chain_id=31337, job_id=job_id, host_address=ADDRESS, nonce=nonce)
    client = e2e.client_handshake(e2e.host_key_check("0x" + e2e.compressed(host).hex(),
                                                     ADDRESS), info)
    return client.channel, e2e.host_channel(host, client.ephemeral, client.salt, info)


# ---- the published vectors ----------------------------------------------------------------

def test_the_published_vectors_are_what_the_code_computes():
    assert json.loads(VECTORS.read_text()) == vectors()


def test_the_vectors_check_out_with_independent_code():
    """OpenSSL's ECDH (not libsecp256k1), eth_account's addresses, and HKDF and the AEAD
    called by hand: another implementation that follows docs/encryption.md agrees."""
    v = json.loads(VECTORS.read_text())
    host = ec.derive_private_key(int(v["host"]["private_key"], 16), ec.SECP256K1())
    ephemeral = ec.derive_private_key(int(v["client_ephemeral"]["private_key"], 16),
                                      ec.SECP256K1())
    assert Account.from_key(v["host"]["private_key"]).address.lower() == v["host"]["address"]
    x = ephemeral.exchange(ec.ECDH(), host.public_key())
    assert x.hex() == v["shared_x"]
    assert host.exchange(ec.ECDH(), ephemeral.public_key()).hex() == v["shared_x"]
    info = (f"inkmarket e2e v3|{v['chain_id']}|{v['job_id']}|{v['host']['address']}|"
            f"{v['challenge_nonce']}")
    assert v["info"] == info
    okm = HKDF(algorithm=hashes.SHA256(), length=80, salt=bytes.fromhex(v["salt"]),
               info=info.encode()).derive(x)
    assert okm.hex() == (v["client_to_host_key"] + v["host_to_client_key"] + v["session_id"])
    sequences = {"client-to-host": 0, "host-to-client": 0}
    for frame in v["frames"]:
        sequence = sequences[frame["direction"]]
        sequences[frame["direction"]] += 1
        key = v["client_to_host_key"] if frame["direction"] == "client-to-host" \
            else v["host_to_client_key"]
        direction = 1 if frame["direction"] == "client-to-host" else 2
        nonce = bytes(4) + sequence.to_bytes(8, "big")
        aad = bytes([3]) + bytes.fromhex(v["session_id"]) + bytes([direction]) + \
            sequence.to_bytes(8, "big")
        assert (frame["sequence"], frame["nonce"], frame["aad"]) == (
            sequence, nonce.hex(), aad.hex())
        raw = bytes.fromhex(frame["frame"])
        assert raw[:9] == bytes([3]) + sequence.to_bytes(8, "big")
        plaintext = ChaCha20Poly1305(bytes.fromhex(key)).decrypt(nonce, raw[9:], aad)
        assert plaintext.decode() == frame["plaintext"]
        assert len(raw) == len(plaintext) + 25
    result = v["result"]
    key = hmac.new(bytes.fromhex(result["seed"]),
                   f"inkmarket result v3|{v['chain_id']}|{v['job_id']}".encode(),
                   hashlib.sha256).digest()
    assert key.hex() == result["result_key"]
    assert hmac.new(key, b"commit|" + result["text"].encode(),
                    hashlib.sha256).hexdigest() == result["commitment"]
    at_rest = hmac.new(key, b"at rest", hashlib.sha256).digest()
    assert ChaCha20Poly1305(at_rest).decrypt(bytes(12), bytes.fromhex(result["at_rest"]),
                                             b"inkmarket result").decode() == result["text"]


def test_the_shared_secret_is_the_x_coordinate_not_the_compressed_point_nor_its_hash():
    v = json.loads(VECTORS.read_text())
    ephemeral = e2e.private_key(bytes.fromhex(v["client_ephemeral"]["private_key"]))
    point = e2e.public_key(bytes.fromhex(v["host"]["public_key"])).multiply(
        ephemeral.secret).format(compressed=True)
    assert v["shared_x"] == point[1:].hex()
    assert v["shared_x"] != hashlib.sha256(point).hexdigest()  # libsecp256k1's default


# ---- keys ---------------------------------------------------------------------------------

def test_a_hosts_key_is_checked_against_its_registered_address():
    key = e2e.private_key(b"\x11" * 32)
    assert e2e.address_of(e2e.host_key_check("0x" + e2e.compressed(key).hex(), ADDRESS)) \
        == ADDRESS.lower()
    other = "0x" + e2e.compressed(e2e.new_ephemeral()).hex()
    for bad in (other, None, "", "0xzz", "0x02" + "ff" * 32, "0x" + "02" * 20):
        with pytest.raises(e2e.SealError) as refused:
            e2e.host_key_check(bad, ADDRESS)
        assert refused.value.code == "HOST_KEY_MISMATCH"


def test_each_direction_and_each_session_has_its_own_keys():
    client, host = pair()
    again, _ = pair()
    frame = client.seal(b"hello")
    assert host.open(frame) == b"hello"
    assert client.session_id == host.session_id != again.session_id
    with pytest.raises(e2e.SealError):
        again.opener.open(frame)  # another session cannot open it


def test_keys_are_bound_to_the_job_and_the_challenge():
    host = e2e.private_key(b"\x11" * 32)
    info = e2e.info(chain_id=31337, job_id=7, host_address=ADDRESS, nonce="ab" * 16)
    client = e2e.client_handshake(e2e.public_key(e2e.compressed(host)), info)
    frame = client.channel.seal(b"request")
    for other in (e2e.info(chain_id=1, job_id=7, host_address=ADDRESS, nonce="ab" * 16),
                  e2e.info(chain_id=31337, job_id=8, host_address=ADDRESS, nonce="ab" * 16),
                  e2e.info(chain_id=31337, job_id=7, host_address=ADDRESS, nonce="cd" * 16)):
        channel = e2e.host_channel(host, client.ephemeral, client.salt, other)
        with pytest.raises(e2e.SealError) as refused:
            channel.open(frame)
        assert refused.value.code == "E2E_BAD_KEY"


# ---- frames -------------------------------------------------------------------------------

def test_frames_open_once_and_in_order_only():
    client, host = pair()
    frames = [client.seal(f"message {i}".encode()) for i in range(4)]
    assert host.open(frames[0]) == b"message 0"
    with pytest.raises(e2e.SealError) as replayed:
        host.open(frames[0])
    assert replayed.value.code == "E2E_REPLAYED"
    with pytest.raises(e2e.SealError) as skipped:
        host.open(frames[2])
    assert skipped.value.code == "E2E_OUT_OF_ORDER"
    assert host.open(frames[1]) == b"message 1"  # a refused frame moves nothing on


@pytest.mark.parametrize(("where", "code"), [
    (0, "UNSUPPORTED_VERSION"),  # the version byte
    (5, "E2E_OUT_OF_ORDER"),  # the sequence number, made far larger
    (8, "E2E_REPLAYED"),  # the sequence number's last byte: 1 becomes 0
    (9, "E2E_TAMPERED"),  # the ciphertext
    (30, "E2E_TAMPERED"),
    (-1, "E2E_TAMPERED"),  # the tag
])
def test_any_altered_byte_is_refused(where, code):
    client, host = pair()
    host.open(client.seal(b"first"))
    frame = bytearray(client.seal(b'{"type": "token", "content": " secret"}'))
    frame[where] ^= 0x01
    with pytest.raises(e2e.SealError) as refused:
        host.open(bytes(frame))
    assert refused.value.code == code


def test_a_frame_sent_back_to_its_sender_does_not_open():
    client, host = pair()
    frame = host.seal(b"to the client")
    with pytest.raises(e2e.SealError) as refused:
        host.open(frame)  # the host's own frame, reflected
    assert refused.value.code == "E2E_BAD_KEY"


def test_a_frame_too_short_for_its_header_and_tag_is_malformed():
    _, host = pair()
    with pytest.raises(e2e.SealError) as refused:
        host.open(b"\x03" + bytes(10))
    assert refused.value.code == "E2E_MALFORMED"


def test_a_frame_adds_25_bytes():
    client, _ = pair()
    assert e2e.OVERHEAD == 25
    assert len(client.seal(b"x" * 100)) == 125


# ---- results ------------------------------------------------------------------------------

def test_a_result_commitment_checks_with_the_key_and_tells_nothing_without_it():
    key = e2e.result_key(b"\x22" * 32, 31337, 7)
    commitment = e2e.result_commitment("The text.", key)
    assert e2e.commitment_matches("The text.", key, "0x" + commitment)
    assert not e2e.commitment_matches("The text!", key, commitment)
    assert not e2e.commitment_matches("The text.", e2e.result_key(b"\x22" * 32, 31337, 8),
                                      commitment)
    assert not e2e.commitment_matches("The text.", key, None)
    assert commitment != hashlib.sha256(b"The text.").hexdigest()


def test_a_result_at_rest_opens_with_its_key_only_and_is_addressed_by_its_ciphertext():
    key = e2e.result_key(b"\x22" * 32, 31337, 7)
    sealed = e2e.seal_result("A private answer.", key)
    assert b"private" not in sealed
    assert e2e.open_result(sealed, key) == "A private answer."
    assert cid_for(sealed) != cid_for(b"A private answer.")
    with pytest.raises(e2e.SealError):
        e2e.open_result(sealed, e2e.result_key(b"\x23" * 32, 31337, 7))
