"""The two attacks on reputation, as tools anyone can run against a devnet (the tests do,
and `manage.py reputation_attack`). docs/trust.md says why neither works.

- `self_deal`: a host buys itself a history. From addresses it funds, it posts jobs
  assigned to itself (the contract refuses 0 tokens, so 1 token each by default), its own
  host process claims and serves them, and the "payers" accept: every job completes on
  chain and the registry's `completed` counter climbs, for the price of the gas.
- `defame` then `refund_expired`: a stranger posts jobs assigned to a victim host, which
  claims them as they are posted; the stranger never connects, and once the deadline has
  passed takes its money back with `refundExpired`, which the registry counts as the
  victim's failures.
"""

from __future__ import annotations

import asyncio
import logging

from eth_account.messages import encode_defunct

from marketplace.chain.contracts import Chain, JobStatus
from marketplace.chain.errors import ChainError
from marketplace.client import stream
from marketplace.protocol import GenerationRequest

log = logging.getLogger(__name__)

RESULT_WAIT_S = 30.0


def _signer(chain: Chain):
    account = chain.sender.account

    def sign(text: str) -> str:
        return "0x" + account.sign_message(encode_defunct(text=text)).signature.hex() \
            .removeprefix("0x")

    return sign


async def _price(chain: Chain, host: str, model: str) -> int:
    price = (await chain.get_node(host, model)).price_per_token_wei
    if price <= 0:
        raise ValueError(f"{host} does not serve {model}")
    return price


async def self_deal(payers: list[Chain], *, host: str, host_url: str, model: str,
                    jobs: int, tokens: int = 1, deadline_s: int = 300) -> list[int]:
    """`jobs` jobs of `tokens` tokens from `payers` in turn, assigned to `host`, served by
    its running host process and accepted. Returns the chain's job ids."""
    price = await _price(payers[0], host, model)
    done = []
    for number in range(jobs):
        payer = payers[number % len(payers)]
        request = GenerationRequest(model=model, prompt=f"Say {number}.", maxTokens=tokens,
                                    temperature=0.0)
        posted = await payer.post_job(
            model=model, prompt_hash=request.digest(), max_tokens=tokens,
            max_price_per_token_wei=price, deadline=await payer.block_time() + deadline_s,
            host=host)

        async def ignore(_piece: str) -> None:
            return None

        await stream.stream_job(host_url, chain_job_id=posted.job_id,
                                chain_id=payer.deployment.chain_id, node_id=host,
                                request=request, signer=_signer(payer), on_token=ignore)
        for _ in range(int(RESULT_WAIT_S / 0.1)):
            if (await payer.get_job(posted.job_id)).status == JobStatus.SUBMITTED:
                break
            await asyncio.sleep(0.1)
        await payer.accept_result(posted.job_id)
        done.append(posted.job_id)
    log.info("self-dealing: %s jobs of %s tokens completed for %s", len(done), tokens, host)
    return done


async def defame(attacker: Chain, *, victim: str, model: str, jobs: int,
                 deadline_s: int = 60, tokens: int = 64) -> list[int]:
    """Post `jobs` jobs assigned to `victim` and walk away; returns the job ids."""
    price = await _price(attacker, victim, model)
    posted = []
    for number in range(jobs):
        request = GenerationRequest(model=model, prompt=f"Never read {number}.",
                                    maxTokens=tokens)
        job = await attacker.post_job(
            model=model, prompt_hash=request.digest(), max_tokens=tokens,
            max_price_per_token_wei=price,
            deadline=await attacker.block_time() + deadline_s, host=victim)
        posted.append(job.job_id)
    return posted


async def refund_expired(attacker: Chain, job_ids: list[int]) -> int:
    """Take back every job of `job_ids` whose deadline has passed; returns how many of
    them the chain counted as the host's failure (it had claimed them)."""
    counted = 0
    for job_id in job_ids:
        job = await attacker.get_job(job_id)
        if job.status not in (JobStatus.POSTED, JobStatus.CLAIMED):
            continue
        try:
            # The latest block may be older than the deadline while the next one is not
            # (a devnet mines only on demand): the contract judges, not us.
            await attacker.refund_expired(job_id)
        except ChainError as exc:
            log.info("job %s not refunded yet: %s", job_id, exc)
            continue
        counted += job.status == JobStatus.CLAIMED
    return counted
