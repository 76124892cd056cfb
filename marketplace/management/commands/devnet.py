"""`manage.py devnet up | down | status | faucet ADDRESS [ETH]`: the local marketplace on
this machine."""

import asyncio
import time
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from eth_utils import is_address

from marketplace import devnet
from marketplace.chain.connect import web3
from marketplace.chain.errors import ChainError
from marketplace.funds import faucet

WEI_PER_ETH = 10**18


class Command(BaseCommand):
    help = ("Start, stop or show the local devnet: anvil, our contracts and local hosts; "
            "`faucet ADDRESS [ETH]` gives an address test ether (10 unless given).")

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["up", "down", "status", "faucet"])
        parser.add_argument("faucet_args", nargs="*", metavar="ADDRESS [ETH]",
                            help="for faucet: the address, and how much ether")
        parser.add_argument("--hosts", type=int, default=3,
                            help="how many local hosts to start (0 for the chain only)")

    def handle(self, *args, action: str, hosts: int, faucet_args: list[str], **options):
        if action == "faucet":
            self._faucet(faucet_args)
        elif action == "up":
            started = time.monotonic()
            try:
                states = devnet.up(hosts=hosts)
            except (TimeoutError, RuntimeError, FileNotFoundError) as exc:
                raise CommandError(str(exc)) from None
            self._show(states)
            self.stdout.write(f"devnet ready in {time.monotonic() - started:.1f} s")
        elif action == "down":
            stopped = devnet.down()
            self.stdout.write(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        else:
            states = devnet.status()
            if not states:
                self.stdout.write("devnet is not running")
            self._show(states)

    def _faucet(self, faucet_args: list[str]) -> None:
        if not 1 <= len(faucet_args) <= 2:
            raise CommandError("usage: devnet faucet ADDRESS [ETH]")
        address = faucet_args[0]
        if not is_address(address):
            raise CommandError(f"{address!r} is not an Ethereum address")
        try:
            ether = Decimal(faucet_args[1]) if len(faucet_args) == 2 else Decimal(10)
        except InvalidOperation:
            raise CommandError(f"{faucet_args[1]!r} is not an amount of ether") from None
        if not 0 < ether <= 1_000_000:
            raise CommandError("give between 0 and 1,000,000 ether")

        async def run() -> int:
            w3 = web3(settings.CHAIN_RPC)
            try:
                return await faucet(w3, address, int(ether * WEI_PER_ETH))
            finally:
                await w3.provider.disconnect()

        try:
            balance = asyncio.run(run())
        except ChainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(f"{address} now holds {Decimal(balance) / WEI_PER_ETH} ETH")

    def _show(self, states):
        for s in states:
            mark = "up  " if s.running else "DOWN"
            self.stdout.write(f"{mark} {s.name:<10} {s.url or '':<28} {s.detail}")
