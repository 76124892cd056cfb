"""Keys live in encrypted keystore files (eth-account's scrypt JSON), and the passphrase
in a file of its own; a raw private key is never read from the environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from marketplace.chain.errors import ChainError


def load_account(keystore: Path | str, passphrase_file: Path | str) -> LocalAccount:
    try:
        encrypted = json.loads(Path(keystore).read_text())
        passphrase = Path(passphrase_file).read_text().strip()
    except (OSError, ValueError) as exc:
        raise ChainError("KEYSTORE_UNREADABLE", str(exc), permanent=True) from None
    try:
        key = Account.decrypt(encrypted, passphrase)
    except ValueError:
        raise ChainError("KEYSTORE_PASSPHRASE", f"wrong passphrase for {keystore}",
                         permanent=True) from None
    return Account.from_key(key)


def write_keystore(path: Path | str, private_key: bytes | str, passphrase: str,
                   *, kdf_iterations: int | None = None) -> str:
    """Encrypt a key to `path` (mode 0600); returns its address."""
    kwargs = {"iterations": kdf_iterations} if kdf_iterations else {}
    encrypted = Account.encrypt(private_key, passphrase, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(encrypted, out)
    return Account.from_key(private_key).address
