"""`manage.py deploy_contracts`: deploy our contracts to CHAIN_RPC_URL from the platform
wallet and record them in var/deployments/<chain id>.json (reused when already there).
The arbitrator role goes to the arbitrator's own key, and the models named are approved
with the sha256 of their GGUF files."""

import asyncio
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from marketplace.chain.deploy import Terms, ensure_deployed
from marketplace.chain.devnet import refuse_devnet_key
from marketplace.chain.errors import ChainError
from marketplace.chain.tx import Sender
from marketplace.wallet import (
    arbitrator_files,
    audit_recorder,
    keystore_address,
    platform_account,
    web3,
)
from marketplace.weights import SMOLLM2_ID, bundled_model_path, file_sha256


def model_approvals(entries: list[str]) -> dict[str, bytes]:
    """`ID=PATH` entries as model id -> the file's sha256; the bundled model when none."""
    if not entries:
        return {SMOLLM2_ID: file_sha256(bundled_model_path())}
    approvals = {}
    for entry in entries:
        model_id, sep, path = entry.partition("=")
        if not sep or not model_id or not path:
            raise CommandError(f"--model {entry!r}: expected MODEL_ID=PATH_TO_GGUF")
        if not Path(path).is_file():
            raise CommandError(f"--model {entry!r}: {path} is not a file")
        approvals[model_id] = file_sha256(Path(path))
    return approvals


class Command(BaseCommand):
    help = "Deploy NodeRegistry, JobMarketplace and PaymentEscrow, once per chain."

    def add_arguments(self, parser):
        parser.add_argument("--treasury", required=True, help="address receiving protocol fees")
        parser.add_argument("--arbitrator", default=None,
                            help="address given ARBITRATOR_ROLE (default: the address of "
                                 "MARKETPLACE_ARBITRATOR_KEYSTORE_FILE)")
        parser.add_argument("--model", action="append", default=[], metavar="ID=PATH",
                            help="approve a model id as this GGUF file (repeatable; default: "
                                 "the bundled SmolLM2 file)")
        parser.add_argument("--min-stake-wei", type=int, default=10**16)
        parser.add_argument("--cooldown-s", type=int, default=3600)
        parser.add_argument("--fee-bps", type=int, default=250)
        parser.add_argument("--dispute-window-s", type=int, default=600)
        parser.add_argument("--arbitration-window-s", type=int, default=86400)

    def handle(self, *args, treasury, arbitrator, model, min_stake_wei, cooldown_s, fee_bps,
               dispute_window_s, arbitration_window_s, **options):
        arbitrator = arbitrator or keystore_address(arbitrator_files()[0])
        if not arbitrator:
            raise CommandError("no arbitrator: pass --arbitrator or set "
                               "MARKETPLACE_ARBITRATOR_KEYSTORE_FILE")
        terms = Terms(treasury=treasury, arbitrator=arbitrator, min_stake_wei=min_stake_wei,
                      cooldown_s=cooldown_s, fee_bps=fee_bps, dispute_window_s=dispute_window_s,
                      arbitration_window_s=arbitration_window_s,
                      models=model_approvals(model))
        try:
            deployment = asyncio.run(self._deploy(terms))
        except ChainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(deployment.to_json())

    async def _deploy(self, terms):
        w3 = web3()
        try:
            chain_id = await w3.eth.chain_id
            refuse_devnet_key(terms.arbitrator, chain_id=chain_id)
            account = await asyncio.to_thread(platform_account, chain_id)
            sender = Sender(w3, account, lock_dir=settings.VAR_DIR / "locks",
                            audit=audit_recorder(chain_id))
            return await ensure_deployed(w3, sender, terms, settings.CHAIN_DEPLOYMENTS_DIR)
        finally:
            await w3.provider.disconnect()
