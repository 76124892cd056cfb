"""One error type for everything that goes wrong on or on the way to the chain."""

from __future__ import annotations

from observability.errors import urls_redacted


class ChainError(Exception):
    """`code` is machine-readable (a contract's custom error name, or one of ours);
    `permanent` means sending the same thing again cannot succeed."""

    def __init__(self, code: str, message: str, *, permanent: bool, tx_hash: str | None = None):
        message = urls_redacted(message)
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.permanent = permanent
        self.tx_hash = tx_hash


class DevnetKeyOnPublicChain(ChainError):
    """A key made from the local devnet's public mnemonic, on a chain that is not the devnet.
    Anyone can sign with that key: whatever it holds or is owed there is anyone's to take."""

    def __init__(self, address: str, chain_id: int, devnet_chain_id: int):
        super().__init__(
            "DEVNET_KEY_ON_PUBLIC_CHAIN",
            f"{address} is one of the devnet's well-known development accounts (its key is "
            f"public) and the chain's id is {chain_id}, not the devnet's {devnet_chain_id}: "
            "set WALLET_KEYSTORE_FILE and WALLET_PASSPHRASE_FILE to a wallet of your own",
            permanent=True)
        self.address = address
        self.chain_id = chain_id
