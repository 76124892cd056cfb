"""`manage.py chain up | down | status`: the local chain alone (anvil and our contracts).
`devnet` starts the same chain with local hosts on it."""

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from marketplace import devnet
from marketplace.chain.connect import web3
from marketplace.chain.deploy import load_deployment
from marketplace.chain.tx import RPC_FAULTS


class Command(BaseCommand):
    help = "Start, stop or show the local chain: anvil with its state under var/devnet/ and " \
           "our contracts, deployed once and reused."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["up", "down", "status"])

    def handle(self, *args, action: str, **options):
        if action == "up":
            try:
                devnet.chain_up()
            except (TimeoutError, RuntimeError, FileNotFoundError) as exc:
                raise CommandError(str(exc)) from None
            self._status()
        elif action == "down":
            stopped = devnet.group().stop("anvil")
            self.stdout.write("anvil stopped, its state saved" if stopped
                              else "anvil was not running")
        else:
            self._status()

    def _status(self) -> None:
        running = devnet.group().running("anvil")
        if running is None:
            self.stdout.write("anvil is not running")
            return
        block, deployment = asyncio.run(self._read())
        self.stdout.write(f"anvil       {devnet.rpc_url()}  pid {running.pid}  block {block}")
        if deployment is None:
            self.stdout.write("contracts   not deployed (run `manage.py chain up`)")
            return
        for name in ("registry", "marketplace", "escrow"):
            self.stdout.write(f"{name:<12}{getattr(deployment, name)}")
        self.stdout.write(f"recorded    {settings.CHAIN_DEPLOYMENTS_DIR}/"
                          f"{deployment.chain_id}.json")

    async def _read(self):
        w3 = web3(devnet.rpc_url())
        try:
            return await w3.eth.block_number, await load_deployment(
                w3, settings.CHAIN_DEPLOYMENTS_DIR)
        except RPC_FAULTS as exc:
            raise CommandError(f"anvil does not answer at {devnet.rpc_url()}: {exc}") from None
        finally:
            await w3.provider.disconnect()
