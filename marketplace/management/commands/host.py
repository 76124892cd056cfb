"""`manage.py host earnings | withdraw | unregister`: a host operator's money, with the
host's own key (the one `runhost` uses). It uses no database of the product's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts import money
from marketplace.chain.connect import web3
from marketplace.chain.contracts import Chain, Deployment
from marketplace.chain.errors import ChainError
from marketplace.chain.keystore import load_account
from marketplace.chain.tx import RPC_FAULTS, Sender, rpc_error
from marketplace.earnings import host_earnings


def _when(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Command(BaseCommand):
    help = ("A host's money: `earnings` shows what it earned (from chain events), `withdraw` "
            "takes its earnings out of escrow, `unregister` leaves the registry and, once the "
            "cooldown is over, takes its stake back (run it again then).")

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["earnings", "withdraw", "unregister"])
        parser.add_argument("--keystore", type=Path, required=True)
        parser.add_argument("--passphrase-file", type=Path, required=True)
        parser.add_argument("--rpc-url", default=None)
        parser.add_argument("--deployment", type=Path, default=None,
                            help="deployments file (default: var/deployments/<chain id>.json)")
        parser.add_argument("--results-dir", type=Path, default=None,
                            help="the running host's --results-dir, to share its nonce lock")

    def handle(self, *args, action: str, **o):
        from marketplace.chain.devnet import CHAIN_ID

        deployment = o["deployment"] or settings.CHAIN_DEPLOYMENTS_DIR / f"{CHAIN_ID}.json"
        if not deployment.exists():
            raise CommandError(f"no deployments file at {deployment}")
        try:
            account = load_account(o["keystore"], o["passphrase_file"])
        except ChainError as exc:
            raise CommandError(f"cannot open the keystore: {exc.message}") from None
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot open the keystore {o['keystore']}: {exc}") from None
        lock_dir = (o["results_dir"] or settings.VAR_DIR / "host") / "locks"
        try:
            asyncio.run(self._run(action, account, o["rpc_url"] or settings.CHAIN_RPC,
                                  Deployment.from_json(deployment.read_text()), lock_dir))
        except ChainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        except RPC_FAULTS as exc:
            raise CommandError(f"the chain does not answer: {rpc_error(exc).message}") from None

    async def _run(self, action, account, rpc_url, deployment, lock_dir):
        w3 = web3(rpc_url)
        chain = Chain(w3, deployment, Sender(w3, account, lock_dir=lock_dir))
        try:
            await getattr(self, f"_{action}")(chain)
        finally:
            await chain.close()

    def _say(self, text: str) -> None:
        self.stdout.write(text)

    async def _earnings(self, chain: Chain) -> None:
        e = await host_earnings(chain, chain.address)
        coin = money.coin_text
        self._say(f"host        {e.address}  (blocks {e.from_block}-{e.to_block})")
        self._say(f"{'day':<12}{'jobs':>6}{'tokens':>9}  {'earned':>18}{'fees':>18}"
                  f"{'gas':>18}{'net':>18}")
        for d in (*e.days, None):
            f = e.total if d is None else d
            label = "total" if d is None else d.day.isoformat()
            self._say(f"{label:<12}{f.jobs:>6}{f.tokens:>9}  {coin(f.earned_wei):>18}"
                      f"{coin(f.fees_wei):>18}{coin(f.gas_wei):>18}{coin(f.net_wei):>18}")
        self._say(f"claimed {e.claimed} jobs, {e.refunded} refunded after the host failed them")
        self._say(f"withdrawable {coin(e.withdrawable_wei)} ({e.withdrawable_wei} wei); "
                  f"withdrawn {coin(e.withdrawn_wei)}")
        state = "active" if e.active else "inactive"
        if e.unregister_available_at:
            state = f"unregistering; stake free from {_when(e.unregister_available_at)}"
        self._say(f"stake {coin(e.stake_wei)} ({e.stake_wei} wei), {state}; "
                  f"slashed {coin(e.slashed_wei)}")

    async def _withdraw(self, chain: Chain) -> None:
        amount = await chain.withdrawable(chain.address)
        if amount == 0:
            self._say("nothing to withdraw")
            return
        tx = await chain.withdraw()
        self._say(f"withdrew {money.coin_text(amount)} ({amount} wei) to {chain.address} "
                  f"in {tx}")

    async def _unregister(self, chain: Chain) -> None:
        node = await chain.get_node(chain.address)
        if node.stake == 0:
            raise CommandError(f"{chain.address} has no stake in the registry (not "
                               "registered, or its stake is already withdrawn)")
        cooldown = int(await chain.registry.functions.cooldown().call())
        if not node.unregister_requested_at:
            tx = await chain.request_unregister()
            node = await chain.get_node(chain.address)
            self._say(f"unregistered in {tx}: no new jobs come to this host. Its stake of "
                      f"{money.coin_text(node.stake)} can be withdrawn from "
                      f"{_when(node.unregister_requested_at + cooldown)}: run "
                      "`manage.py host unregister` again then.")
            return
        free_at = node.unregister_requested_at + cooldown
        if await chain.block_time() < free_at:
            raise CommandError(f"the stake is held until {_when(free_at)} (the registry's "
                               "cooldown): run this again then")
        if node.open_disputes:
            raise CommandError(f"{node.open_disputes} dispute(s) against this host are open: "
                               "the stake is held until they end")
        stake = node.stake
        tx = await chain.withdraw_stake()
        self._say(f"withdrew the stake of {money.coin_text(stake)} ({stake} wei) to "
                  f"{chain.address} in {tx}")
