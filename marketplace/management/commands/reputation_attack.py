"""`manage.py reputation_attack self-dealing|defame`: try the two attacks on reputation
against the local devnet (docs/trust.md, "Reputation"), from the devnet's spare funded
accounts, and see the chain's counters move while our ranking does not."""

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from eth_account import Account

from marketplace import reputation_attacks
from marketplace.chain.contracts import Chain
from marketplace.chain.deploy import load_deployment
from marketplace.chain.devnet import dev_private_key
from marketplace.chain.errors import ChainError
from marketplace.chain.tx import Sender
from marketplace.client import pool
from marketplace.wallet import web3

# anvil funds the first ten accounts of the devnet's mnemonic; these have no role in it.
SPARE_ACCOUNTS = (5, 6, 7)  # 8 is the arbitrator, 9 the treasury


class Command(BaseCommand):
    help = ("Attack a host's reputation on the devnet: self-dealing (the host pays itself "
            "from spare accounts) or defame (jobs assigned to a victim, left to expire and "
            "refunded).")

    def add_arguments(self, parser):
        parser.add_argument("attack", choices=["self-dealing", "defame"])
        parser.add_argument("--host", required=True, help="the host's address")
        parser.add_argument("--model", default="smollm2-135m-instruct")
        parser.add_argument("--jobs", type=int, default=12)
        parser.add_argument("--tokens", type=int, default=1,
                            help="tokens per self-dealt job (the contract refuses 0)")
        parser.add_argument("--accounts", type=int, nargs="+", default=list(SPARE_ACCOUNTS),
                            choices=SPARE_ACCOUNTS, help="devnet account indexes to pay from")
        parser.add_argument("--deadline", type=int, default=30,
                            help="seconds until a defaming job may be refunded")

    def handle(self, *args, **o):
        try:
            said = asyncio.run(self._attack(o))
        except (ChainError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(said)

    async def _attack(self, o) -> str:
        w3 = web3(settings.CHAIN_RPC)
        try:
            deployment = await load_deployment(w3, settings.CHAIN_DEPLOYMENTS_DIR)
            if deployment is None:
                raise ValueError("no contracts on this chain: `manage.py chain up` first")
            chains = [Chain(w3, deployment, Sender(
                w3, Account.from_key(dev_private_key(index)),
                lock_dir=settings.VAR_DIR / "locks")) for index in o["accounts"]]
            node = await chains[0].get_node(o["host"], o["model"])
            if o["attack"] == "self-dealing":
                done = await reputation_attacks.self_deal(
                    chains, host=node.address, host_url=node.url, model=o["model"],
                    jobs=o["jobs"], tokens=o["tokens"])
                after = await chains[0].get_node(node.address)
                return (f"{len(done)} jobs paid to {node.address} by {len(chains)} addresses; "
                        f"the registry now counts {after.completed} completed")
            posted = await reputation_attacks.defame(
                chains[0], victim=node.address, model=o["model"], jobs=o["jobs"],
                deadline_s=o["deadline"])
            self.stdout.write(f"{len(posted)} jobs assigned to {node.address}; waiting for "
                              "their deadline")
            counted = 0
            while counted < len(posted):
                await asyncio.sleep(2)
                # anvil mines only when a transaction comes: an empty block moves the clock
                # the contract reads, as a live chain's blocks would.
                await w3.provider.make_request("evm_mine", [])
                counted += await reputation_attacks.refund_expired(chains[0], posted)
            after = await chains[0].get_node(node.address)
            return f"refunded; the registry now counts {after.failed} failed for {node.address}"
        finally:
            await pool.close()  # the streams' sessions belong to this command's loop
            await w3.provider.disconnect()
