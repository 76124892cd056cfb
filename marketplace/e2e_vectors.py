"""Test vectors of protocol 3's encryption, for other implementations to check against.

    python -m marketplace.e2e_vectors > docs/encryption-vectors.json

Every value follows from fixed keys, salt and nonce, so the file is the same on every run;
tests/marketplace/test_e2e.py recomputes it and checks it against independent code.
"""

from __future__ import annotations

import hashlib
import json
import sys

from marketplace import e2e
from marketplace.protocol import challenge_message


def _fixed(label: str) -> bytes:
    return hashlib.sha256(f"inkmarket e2e test vector: {label}".encode()).digest()


def vectors() -> dict:
    host = e2e.private_key(_fixed("host key"))
    ephemeral = e2e.private_key(_fixed("client ephemeral key"))
    host_public = e2e.public_key(e2e.compressed(host))
    address = e2e.address_of(host_public)
    salt = _fixed("salt")
    nonce = _fixed("challenge nonce")[:16].hex()
    chain_id, job_id = 31337, 42
    info = e2e.info(chain_id=chain_id, job_id=job_id, host_address=address, nonce=nonce)
    x = e2e.shared_x(ephemeral, host_public)
    keys = e2e.derive(x, salt, info)
    client = e2e.client_handshake(host_public, info, ephemeral=ephemeral, salt=salt).channel
    host_side = e2e.host_channel(host, e2e.compressed(ephemeral), salt, info)
    messages = [
        (e2e.CLIENT_TO_HOST, {"type": "open", "request": {
            "model": "smollm2-135m-instruct", "prompt": "Name a colour.", "prefix": "",
            "maxTokens": 8, "temperature": 0.0, "seed": _fixed("seed").hex()}}),
        (e2e.HOST_TO_CLIENT, {"type": "checkpoint", "data": {"index": -1, "generated": 0}}),
        (e2e.HOST_TO_CLIENT, {"type": "token", "index": 0, "content": " Blue",
                              "timestamp": 1796601600.0,
                              "metadata": {"id": 8102, "logprob": -0.25}}),
        (e2e.CLIENT_TO_HOST, {"type": "ack", "index": 0}),
    ]
    frames = []
    for direction, message in messages:
        sealer = client if direction == e2e.CLIENT_TO_HOST else host_side
        sequence = sealer.sealer.sequence
        plaintext = json.dumps(message, separators=(",", ":")).encode()
        frames.append({
            "direction": "client-to-host" if direction == e2e.CLIENT_TO_HOST
            else "host-to-client",
            "sequence": sequence,
            "nonce": e2e.nonce_for(sequence).hex(),
            "aad": e2e.aad_for(keys.session_id, direction, sequence).hex(),
            "plaintext": plaintext.decode(),
            "frame": sealer.seal(plaintext).hex(),
        })
    seed = _fixed("seed")
    result_key = e2e.result_key(seed, chain_id, job_id)
    text = " Blue, like the sea."
    return {
        "scheme": "inkmarket e2e v3: ECDH secp256k1 (x-coordinate) + HKDF-SHA256 + "
                  "ChaCha20-Poly1305 (docs/encryption.md)",
        "host": {"private_key": _fixed("host key").hex(),
                 "public_key": e2e.compressed(host).hex(), "address": address},
        "client_ephemeral": {"private_key": _fixed("client ephemeral key").hex(),
                             "public_key": e2e.compressed(ephemeral).hex()},
        "shared_x": x.hex(),
        "chain_id": chain_id, "job_id": job_id, "challenge_nonce": nonce,
        "salt": salt.hex(), "info": info.decode(),
        "client_to_host_key": keys.client_to_host.hex(),
        "host_to_client_key": keys.host_to_client.hex(),
        "session_id": keys.session_id.hex(),
        "signed_text": challenge_message(nonce, job_id, address,
                                         "0x" + e2e.compressed(ephemeral).hex(),
                                         "0x" + salt.hex()),
        "frames": frames,
        "result": {"seed": seed.hex(), "result_key": result_key.hex(), "text": text,
                   "commitment": e2e.result_commitment(text, result_key),
                   "at_rest": e2e.seal_result(text, result_key).hex()},
    }


if __name__ == "__main__":
    json.dump(vectors(), sys.stdout, indent=2)
    sys.stdout.write("\n")
