"""End-to-end encryption of a stream between a client and a host (protocol 3).

docs/encryption.md describes the scheme and why it is built so; in short:

- The host's key is its registered chain key (secp256k1). The client checks that the
  public key in the challenge hashes to the host's address in NodeRegistry
  (`address_of`) before it sends anything.
- The client makes an ephemeral key and a random 32-byte salt for each connection. The
  shared secret is the x-coordinate of the ECDH point, 32 bytes big-endian (never the
  compressed point). HKDF-SHA256(ikm = x, salt, info = `info(...)`) gives 80 bytes: the
  client-to-host key, the host-to-client key and a 16-byte session id.
- Every message after the handshake is one binary frame:
  `version (1) ‖ sequence (8, big-endian) ‖ ChaCha20-Poly1305(plaintext)`, with nonce
  `0x00000000 ‖ sequence` and associated data `version ‖ session id ‖ direction ‖
  sequence`. Each direction counts from 0 and accepts only the next number, so a replayed,
  reordered, dropped or spliced frame never opens.

Shared by the host and the client; it imports neither, nor Django.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

from coincurve import PrivateKey, PublicKey
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_utils import keccak

VERSION = 3
CLIENT_TO_HOST = 1
HOST_TO_CLIENT = 2
HEADER = struct.Struct(">BQ")  # version, sequence
TAG_BYTES = 16
OVERHEAD = HEADER.size + TAG_BYTES  # bytes a sealed frame adds to its plaintext
SALT_BYTES = 32
SESSION_ID_BYTES = 16
_KEY_BYTES = 32


class Code:
    """Why a sealed frame, or the keys behind it, are refused."""

    KEY_MISMATCH = "HOST_KEY_MISMATCH"  # the host's key is not its registered address's
    BAD_KEY = "E2E_BAD_KEY"  # not a point on the curve, or the first frame will not open
    TAMPERED = "E2E_TAMPERED"  # a frame that does not open under the session's key
    REPLAYED = "E2E_REPLAYED"  # a sequence number already seen
    OUT_OF_ORDER = "E2E_OUT_OF_ORDER"  # a sequence number past the next one: a gap
    VERSION = "UNSUPPORTED_VERSION"
    MALFORMED = "E2E_MALFORMED"  # shorter than a header and a tag


class SealError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ---- keys ---------------------------------------------------------------------------------
# Curve arithmetic is libsecp256k1's (coincurve): constant-time, and ten times faster than
# OpenSSL's generic code for this curve, which would cost a millisecond a connection.

def private_key(secret: bytes) -> PrivateKey:
    """A secp256k1 private key from its 32 bytes (an Ethereum account's key)."""
    return PrivateKey(secret)


def new_ephemeral() -> PrivateKey:
    return PrivateKey()


def compressed(key: PrivateKey | PublicKey) -> bytes:
    public = key.public_key if isinstance(key, PrivateKey) else key
    return public.format(compressed=True)


def public_key(data: bytes) -> PublicKey:
    """A public key from its SEC1 bytes (33 compressed or 65 uncompressed); SealError
    BAD_KEY when they are not a point on the curve."""
    if len(data) not in (33, 65):
        raise SealError(Code.BAD_KEY, f"a public key of {len(data)} bytes")
    try:
        return PublicKey(data)
    except (ValueError, TypeError):
        raise SealError(Code.BAD_KEY, "the public key is not a point on secp256k1") from None


def address_of(key: PublicKey) -> str:
    """The Ethereum address of a public key: the last 20 bytes of keccak256 of its
    uncompressed point without the 0x04 prefix, lowercase hex."""
    return "0x" + keccak(key.format(compressed=False)[1:])[12:].hex()


def host_key_check(key_hex: str | None, address: str) -> PublicKey:
    """The host's public key from its challenge, if it is the key of `address` (the host's
    address in NodeRegistry); SealError KEY_MISMATCH otherwise."""
    if not isinstance(key_hex, str) or not key_hex:
        raise SealError(Code.KEY_MISMATCH, "the host sent no public key")
    try:
        raw = bytes.fromhex(key_hex.removeprefix("0x"))
    except ValueError:
        raise SealError(Code.KEY_MISMATCH, "the host's public key is not hex") from None
    try:
        key = public_key(raw)
    except SealError as exc:
        raise SealError(Code.KEY_MISMATCH, exc.message) from None
    if address_of(key) != address.lower():
        raise SealError(Code.KEY_MISMATCH, f"the host's key belongs to {address_of(key)}, "
                        f"not to {address.lower()} as registered")
    return key


def shared_x(private: PrivateKey, public: PublicKey) -> bytes:
    """ECDH: the x-coordinate of private·public, 32 bytes big-endian. Not the compressed
    point, and not libsecp256k1's default ECDH output (SHA-256 of the compressed point)."""
    return public.multiply(private.secret).format(compressed=False)[1:33]


def info(*, chain_id: int, job_id: int, host_address: str, nonce: str) -> bytes:
    """What the keys are bound to: the protocol, the chain, the job, the host and the
    host's challenge nonce (so the host, too, makes each session's keys fresh)."""
    return f"inkmarket e2e v{VERSION}|{chain_id}|{job_id}|{host_address.lower()}|{nonce}" \
        .encode()


@dataclass(frozen=True)
class Keys:
    client_to_host: bytes
    host_to_client: bytes
    session_id: bytes


def derive(x: bytes, salt: bytes, info_bytes: bytes) -> Keys:
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * _KEY_BYTES + SESSION_ID_BYTES,
               salt=salt, info=info_bytes).derive(x)
    return Keys(client_to_host=okm[:_KEY_BYTES], host_to_client=okm[_KEY_BYTES:2 * _KEY_BYTES],
                session_id=okm[2 * _KEY_BYTES:])


# ---- frames -------------------------------------------------------------------------------

def nonce_for(sequence: int) -> bytes:
    return b"\x00\x00\x00\x00" + sequence.to_bytes(8, "big")


def aad_for(session_id: bytes, direction: int, sequence: int) -> bytes:
    return bytes([VERSION]) + session_id + bytes([direction]) + sequence.to_bytes(8, "big")


class Sealer:
    """Seals one direction's messages in order."""

    def __init__(self, key: bytes, session_id: bytes, direction: int):
        self._aead = ChaCha20Poly1305(key)
        self._session_id = session_id
        self._direction = direction
        self.sequence = 0

    def seal(self, plaintext: bytes) -> bytes:
        sequence = self.sequence
        self.sequence += 1
        return HEADER.pack(VERSION, sequence) + self._aead.encrypt(
            nonce_for(sequence), plaintext, aad_for(self._session_id, self._direction, sequence))


class Opener:
    """Opens one direction's frames, each exactly once and in order."""

    def __init__(self, key: bytes, session_id: bytes, direction: int):
        self._aead = ChaCha20Poly1305(key)
        self._session_id = session_id
        self._direction = direction
        self.sequence = 0

    def open(self, frame: bytes) -> bytes:
        if len(frame) < OVERHEAD:
            raise SealError(Code.MALFORMED, f"a sealed frame of {len(frame)} bytes is shorter "
                            f"than its {OVERHEAD}-byte header and tag")
        version, sequence = HEADER.unpack_from(frame)
        if version != VERSION:
            raise SealError(Code.VERSION, f"a frame of protocol {version}; this stream "
                            f"speaks {VERSION}")
        if sequence < self.sequence:
            raise SealError(Code.REPLAYED, f"frame {sequence} again, after frame "
                            f"{self.sequence - 1}")
        if sequence > self.sequence:
            raise SealError(Code.OUT_OF_ORDER, f"frame {sequence} where frame "
                            f"{self.sequence} was due")
        try:
            plaintext = self._aead.decrypt(
                nonce_for(sequence), frame[HEADER.size:],
                aad_for(self._session_id, self._direction, sequence))
        except InvalidTag:
            if sequence == 0:
                raise SealError(Code.BAD_KEY, "the first frame does not open: the sender "
                                "holds other keys") from None
            raise SealError(Code.TAMPERED, f"frame {sequence} does not open: it was "
                            "altered or belongs to another session") from None
        self.sequence += 1
        return plaintext


@dataclass
class Channel:
    """One side's two directions of a session."""

    sealer: Sealer
    opener: Opener
    session_id: bytes

    def seal(self, plaintext: bytes) -> bytes:
        return self.sealer.seal(plaintext)

    def open(self, frame: bytes) -> bytes:
        return self.opener.open(frame)


def _channel(keys: Keys, *, host: bool) -> Channel:
    send, receive = (keys.host_to_client, keys.client_to_host) if host else \
        (keys.client_to_host, keys.host_to_client)
    out, into = (HOST_TO_CLIENT, CLIENT_TO_HOST) if host else (CLIENT_TO_HOST, HOST_TO_CLIENT)
    return Channel(sealer=Sealer(send, keys.session_id, out),
                   opener=Opener(receive, keys.session_id, into), session_id=keys.session_id)


@dataclass
class ClientHandshake:
    """The client's half: its ephemeral key, its salt and the channel they give."""

    ephemeral: bytes  # compressed public key, sent in StreamInit
    salt: bytes
    channel: Channel


def client_handshake(host_key: PublicKey, info_bytes: bytes, *,
                     ephemeral: PrivateKey | None = None,
                     salt: bytes | None = None) -> ClientHandshake:
    ephemeral = ephemeral or new_ephemeral()
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    keys = derive(shared_x(ephemeral, host_key), salt, info_bytes)
    return ClientHandshake(ephemeral=compressed(ephemeral), salt=salt,
                           channel=_channel(keys, host=False))


def host_channel(host: PrivateKey, ephemeral: bytes, salt: bytes,
                 info_bytes: bytes) -> Channel:
    """The host's half, from the client's ephemeral key and salt; SealError BAD_KEY for a
    key that is not a point on the curve."""
    if len(salt) != SALT_BYTES:
        raise SealError(Code.MALFORMED, f"a salt of {len(salt)} bytes; it has {SALT_BYTES}")
    keys = derive(shared_x(host, public_key(ephemeral)), salt, info_bytes)
    return _channel(keys, host=True)


# ---- results: the keyed commitment and the copy at rest -------------------------------------

def result_key(seed: bytes, chain_id: int, job_id: int) -> bytes:
    """The job's result key: HMAC-SHA256 keyed by the client's sampling secret (the
    request's `seed`, which only the client and the job's host know)."""
    return hmac.new(seed, f"inkmarket result v{VERSION}|{chain_id}|{job_id}".encode(),
                    hashlib.sha256).digest()


def result_commitment(text: str, key: bytes) -> str:
    """The resultHash a host submits on chain: HMAC-SHA256(key, text), hex. Whoever holds
    the key checks a text against it; without the key nobody can test a guess."""
    return hmac.new(key, b"commit|" + text.encode("utf-8"), hashlib.sha256).hexdigest()


def commitment_matches(text: str, key: bytes, result_hash: str | None) -> bool:
    expected = (result_hash or "").lower().removeprefix("0x")
    return bool(expected) and hmac.compare_digest(result_commitment(text, key), expected)


def _at_rest_key(key: bytes) -> bytes:
    return hmac.new(key, b"at rest", hashlib.sha256).digest()


def seal_result(text: str, key: bytes) -> bytes:
    """The result as the host stores it: ChaCha20-Poly1305 under a key of its own, used
    for this one text only (so a fixed nonce is safe)."""
    return ChaCha20Poly1305(_at_rest_key(key)).encrypt(bytes(12), text.encode("utf-8"),
                                                       b"inkmarket result")


def open_result(data: bytes, key: bytes) -> str:
    try:
        return ChaCha20Poly1305(_at_rest_key(key)).decrypt(bytes(12), data,
                                                           b"inkmarket result").decode("utf-8")
    except InvalidTag:
        raise SealError(Code.TAMPERED, "the stored result does not open with this key") \
            from None
