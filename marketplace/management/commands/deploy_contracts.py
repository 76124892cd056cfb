"""`manage.py deploy_contracts`: deploy our contracts to CHAIN_RPC_URL from the platform
wallet and record them in var/deployments/<chain id>.json (reused when already there)."""

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from marketplace.chain.deploy import Terms, ensure_deployed
from marketplace.chain.errors import ChainError
from marketplace.chain.tx import Sender
from marketplace.wallet import audit_recorder, platform_account, web3


class Command(BaseCommand):
    help = "Deploy NodeRegistry, JobMarketplace and PaymentEscrow, once per chain."

    def add_arguments(self, parser):
        parser.add_argument("--treasury", required=True, help="address receiving protocol fees")
        parser.add_argument("--min-stake-wei", type=int, default=10**16)
        parser.add_argument("--cooldown-s", type=int, default=3600)
        parser.add_argument("--fee-bps", type=int, default=250)
        parser.add_argument("--dispute-window-s", type=int, default=600)

    def handle(self, *args, treasury, min_stake_wei, cooldown_s, fee_bps, dispute_window_s,
               **options):
        terms = Terms(treasury=treasury, min_stake_wei=min_stake_wei, cooldown_s=cooldown_s,
                      fee_bps=fee_bps, dispute_window_s=dispute_window_s)
        try:
            deployment = asyncio.run(self._deploy(terms))
        except ChainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(deployment.to_json())

    async def _deploy(self, terms):
        w3 = web3()
        try:
            chain_id = await w3.eth.chain_id
            account = await asyncio.to_thread(platform_account, chain_id)
            sender = Sender(w3, account, lock_dir=settings.VAR_DIR / "locks",
                            audit=audit_recorder(chain_id))
            return await ensure_deployed(w3, sender, terms, settings.CHAIN_DEPLOYMENTS_DIR)
        finally:
            await w3.provider.disconnect()
