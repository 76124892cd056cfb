"""A host's disputes end: past a dispute's arbitration deadline, the host expires it itself.

The arbitrator rules within the contract's arbitration window (marketplace.arbitration);
if nobody rules, the escrow would stay locked until someone calls `expireDispute`, which
settles as if the host's submitted result stood. The host is the party that wants this, so
it watches `JobDisputed` for its own jobs and calls it when the deadline has passed on
chain.

What it knows survives a restart: the last block read and the disputes still open are kept
in a small JSON file beside the host's results (written whole, then renamed), so a host
that was down when its dispute's deadline passed expires it when it comes back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from marketplace.chain.contracts import Chain, JobStatus
from marketplace.chain.errors import ChainError
from marketplace.chain.events import MAX_RANGE, read_range
from marketplace.chain.tx import RPC_FAULTS, rpc_error

log = logging.getLogger(__name__)

# Open disputes remembered at most: a host with more than this many unresolved disputes
# forgets the ones with the latest deadlines first (it sees them again only after a
# restart from an earlier cursor); far more than an honest host ever has.
MAX_OPEN = 10_000


class DisputeWatch:
    def __init__(self, chain: Chain, state_file: Path, *, from_block: int = 0):
        self.chain = chain
        self.state_file = state_file
        self.next_block = from_block
        self.open: dict[int, int] = {}  # job id -> arbitration deadline (chain time)
        self._load()

    def _load(self) -> None:
        try:
            state = json.loads(self.state_file.read_text())
            self.next_block = int(state["next_block"])
            self.open = {int(k): int(v) for k, v in state["open"].items()}
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("dispute state %s unreadable (%s): reading the chain from block %s",
                        self.state_file, exc, self.next_block)

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"next_block": self.next_block,
                                   "open": {str(k): v for k, v in self.open.items()}}))
        tmp.replace(self.state_file)

    async def step(self) -> list[int]:
        """Read new disputes, expire the ones past their deadline; returns those expired."""
        head = await self.chain.w3.eth.block_number
        while self.next_block <= head:
            end = min(head, self.next_block + MAX_RANGE - 1)
            for event in await read_range(self.chain.market, ["JobDisputed"],
                                          self.next_block, end):
                job_id = int(event.args["jobId"])
                if job_id not in self.open and await self._mine(job_id):
                    self.open[job_id] = int(event.args["arbitrationDeadline"])
            self.next_block = end + 1
            if len(self.open) > MAX_OPEN:
                self.open = dict(sorted(self.open.items(), key=lambda kv: kv[1])[:MAX_OPEN])
            await asyncio.to_thread(self._save)
        # The time the next transaction runs at (the contract's block.timestamp).
        now = (await self.chain.w3.eth.get_block("pending"))["timestamp"]
        expired = []
        for job_id, deadline in sorted(self.open.items(), key=lambda kv: kv[1]):
            if now <= deadline:
                break
            job = await self.chain.get_job(job_id)
            if job.status == JobStatus.DISPUTED:
                settled = await self.chain.expire_dispute(job_id)
                log.info("dispute of job %s expired unresolved: %s wei to this host (%s)",
                         job_id, settled.host_amount, settled.tx_hash)
                expired.append(job_id)
            del self.open[job_id]  # expired now, or resolved by the arbitrator
            await asyncio.to_thread(self._save)
        return expired

    async def _mine(self, job_id: int) -> bool:
        job = await self.chain.get_job(job_id)
        return job.host.lower() == self.chain.address.lower()

    async def run(self, every_s: float) -> None:
        while True:
            try:
                await self.step()
            except ChainError as exc:
                log.warning("expiring disputes: %s", exc)
            except RPC_FAULTS as exc:
                log.warning("expiring disputes, waiting for the chain: %s", rpc_error(exc))
            await asyncio.sleep(every_s)
