"""Deploying the contracts and wiring them together; a deployments file per chain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3

from marketplace.chain import artifacts
from marketplace.chain.contracts import ZERO_HASH, Chain, Deployment
from marketplace.chain.errors import ChainError
from marketplace.chain.tx import Sender


@dataclass(frozen=True)
class Terms:
    """What a deployment is made with. `arbitrator` resolves disputes and slashes stakes:
    its own key, never the deploying (admin, paying) wallet. `models` are approved at
    deployment: model id -> sha256 of its GGUF file."""

    treasury: str
    arbitrator: str
    min_stake_wei: int = 10**16
    cooldown_s: int = 3600
    fee_bps: int = 250
    dispute_window_s: int = 600
    arbitration_window_s: int = 86400
    # How long a host has to close a channel with its latest voucher once the payer
    # starts to leave it alone (docs/sessions.md).
    channel_challenge_s: int = 86400
    models: Mapping[str, bytes] = field(default_factory=dict)


async def _deploy(w3: AsyncWeb3, sender: Sender, name: str, *args) -> tuple[str, int]:
    factory = w3.eth.contract(abi=artifacts.abi(name), bytecode=artifacts.bytecode(name))
    receipt = await sender.transact(name, factory.constructor, *args)
    return receipt["contractAddress"], int(receipt["blockNumber"])


async def deploy(w3: AsyncWeb3, sender: Sender, terms: Terms) -> Deployment:
    """Deploy the registry, the marketplace (which creates its escrow) and the payment
    channels, let the marketplace write reputation in the registry, and approve the
    terms' models."""
    admin = sender.address
    if to_checksum_address(terms.arbitrator) == to_checksum_address(admin):
        # The deploying wallet is the admin and, here, the wallet that pays for jobs: as
        # arbitrator it would judge disputes over its own payments.
        raise ChainError("ARBITRATOR_IS_ADMIN", f"the arbitrator {admin} is the deploying "
                         "wallet: give the arbitrator a key of its own", permanent=True)
    registry, first_block = await _deploy(w3, sender, "NodeRegistry", admin, terms.arbitrator,
                                          terms.treasury, terms.min_stake_wei,
                                          terms.cooldown_s)
    market, _ = await _deploy(w3, sender, "JobMarketplace", admin, terms.arbitrator, registry,
                              terms.treasury, terms.fee_bps, terms.dispute_window_s,
                              terms.arbitration_window_s)
    market_contract = w3.eth.contract(address=market, abi=artifacts.abi("JobMarketplace"))
    escrow = await market_contract.functions.escrow().call()
    channels, _ = await _deploy(w3, sender, "PaymentChannels", market,
                                terms.channel_challenge_s)
    deployment = Deployment(chain_id=await w3.eth.chain_id, registry=registry,
                            marketplace=market, escrow=escrow, block=first_block,
                            code_version=artifacts.code_version(), channels=channels)
    chain = Chain(w3, deployment, sender)
    await sender.transact("NodeRegistry", chain.registry.functions.grantRole,
                          keccak(text="MARKETPLACE_ROLE"), market)
    await approve_models(chain, terms.models)
    return deployment


async def approve_models(chain: Chain, models: Mapping[str, bytes]) -> None:
    """Approve each model id with its GGUF's sha256, sending only what is not on chain yet
    (a model approved with another file makes the registry revert: ModelHashTaken)."""
    for model_id, sha256 in models.items():
        if await chain.model_hash(model_id) == sha256:
            continue
        if sha256 == ZERO_HASH:
            raise ValueError(f"no sha256 for model {model_id!r}")
        await chain.approve_model(model_id, sha256)


def deployment_path(directory: Path, chain_id: int) -> Path:
    return directory / f"{chain_id}.json"


async def load_deployment(w3: AsyncWeb3, directory: Path) -> Deployment | None:
    """The recorded deployment for this chain, if it is of the current code and its
    contracts are really there."""
    path = deployment_path(directory, await w3.eth.chain_id)
    if not path.exists():
        return None
    deployment = Deployment.from_json(path.read_text())
    if deployment.code_version != artifacts.code_version():
        return None  # deployed from other sources: deploy the current ones
    for address in (deployment.registry, deployment.marketplace, deployment.escrow,
                    deployment.channels):
        if len(await w3.eth.get_code(address)) == 0:
            return None
    return deployment


async def ensure_deployed(w3: AsyncWeb3, sender: Sender, terms: Terms,
                          directory: Path) -> Deployment:
    """Reuse the recorded deployment, or deploy once and record it."""
    found = await load_deployment(w3, directory)
    if found is not None:
        # Models added to the terms since the deployment are approved now.
        await approve_models(Chain(w3, found, sender), terms.models)
        return found
    deployment = await deploy(w3, sender, terms)
    path = deployment_path(directory, deployment.chain_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(deployment.to_json())
    return deployment
