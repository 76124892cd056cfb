"""Helpers for races that need two transactions in one block."""

from __future__ import annotations

import asyncio

from marketplace.chain.contracts import Chain


async def claim_in_one_block(platform: Chain, hosts: list[Chain], job_id: int, model: str):
    """Let every host claim `job_id`, mine all the claims in one block, and return what
    each claim raised or returned. Every claim passes gas estimation (the job is still
    posted when each is estimated); all but the first revert when mined."""
    rpc = platform.w3.provider.make_request
    await rpc("evm_setAutomine", [False])
    try:
        claims = [asyncio.create_task(h.claim_job(job_id, model)) for h in hosts]
        for _ in range(500):
            if len((await rpc("txpool_content", []))["result"]["pending"]) == len(hosts):
                break
            await asyncio.sleep(0.02)
        await rpc("evm_mine", [])
    finally:
        await rpc("evm_setAutomine", [True])
    return await asyncio.gather(*claims, return_exceptions=True)
