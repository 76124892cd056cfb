"""The chain layer: our contracts on an EVM, through web3's async API.

Importable without Django: the host process uses it with no database of ours.
"""
