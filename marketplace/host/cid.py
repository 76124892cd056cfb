"""Content addressing: a CIDv1 (raw codec, sha2-256 multihash) in base32, as IPFS writes it.

Written here rather than taken from a library because it is five lines of well-specified
bytes (multiformats spec) and the packaged implementations pull in much more than we use.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

_CID_V1, _RAW, _SHA2_256 = 0x01, 0x55, 0x12


def cid_for(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    raw = bytes([_CID_V1, _RAW, _SHA2_256, len(digest)]) + digest
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def digest_of_cid(cid: str) -> bytes:
    raw = base64.b32decode(cid[1:].upper() + "=" * (-len(cid[1:]) % 8))
    if cid[0] != "b" or raw[:4] != bytes([_CID_V1, _RAW, _SHA2_256, 32]):
        raise ValueError(f"not a CIDv1 raw sha2-256: {cid}")
    return raw[4:]


class ResultStore:
    """Results on disk under their CID; reading one back checks its hash. The host stores
    them sealed (marketplace.e2e.seal_result): the bytes here, and the CID, are the
    ciphertext's."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes) -> str:
        cid = cid_for(data)
        path = self.directory / cid
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return cid

    def get(self, cid: str) -> bytes:
        data = (self.directory / cid).read_bytes()
        if hashlib.sha256(data).digest() != digest_of_cid(cid):
            raise ValueError(f"stored result {cid} does not match its hash")
        return data
