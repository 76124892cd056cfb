"""The process running a job killed with SIGKILL while the host streams: nobody calls
anything afterwards, and the beat and a worker settle the job on chain and close it, on
what the host delivered: our death is not the host's fault."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys

import pytest

from marketplace.chain.contracts import JobStatus
from marketplace.client import loops
from marketplace.client.verify import job_result_key
from marketplace.e2e import commitment_matches
from marketplace.models import (
    AttemptState,
    Job,
    JobProcessing,
    JobState,
    ProcessingState,
    VerificationRecord,
    VerificationState,
)
from marketplace.wallet import platform_chain
from tests.ops.conftest import ROOT, process_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_job_whose_process_died_is_settled_and_closed_by_the_workers(
        network, settings, own_redis, processes):
    network.start_hosts({"host-1": 10**9})
    chain_env = {"CHAIN_RPC_URL": network.anvil.url, "VAR_DIR": str(network.tmp),
                 "WALLET_KEYSTORE_FILE": settings.WALLET_KEYSTORE_FILE,
                 "WALLET_PASSPHRASE_FILE": settings.WALLET_PASSPHRASE_FILE}
    web = subprocess.Popen(
        [sys.executable, "manage.py", "generate", "--type", "blog", "--length", "long",
         "--max-tokens", "200", "--temperature", "0", "Write about harbours."],
        cwd=ROOT, env=process_env(**chain_env), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: Job.objects.filter(tokens__gte=5, state=JobState.STREAMING).exists(),
                 timeout=120, what="the job to stream")
    finally:
        web.send_signal(signal.SIGKILL)
        web.wait()
    job = Job.objects.get()
    streaming = job.attempts.get()
    assert streaming.state == AttemptState.STREAMING

    async def status():
        return (await (await platform_chain()).get_job(streaming.chain_job_id)).status

    # The host goes on without its client and submits what it generated.
    wait_for(lambda: loops.run_async(status()) == JobStatus.SUBMITTED, timeout=60,
             what="the host to submit its result")
    processes.worker(process_env(REDIS_URL=own_redis.url, OPS_BEAT_INTERVAL_S="2",
                                 OPS_ORPHAN_AFTER_S="3", **chain_env), beat=True)
    wait_for(lambda: JobProcessing.objects.filter(pk=job.pk, state=ProcessingState.DONE)
             .exists(), timeout=120, what="the workers to close the job")

    job.refresh_from_db()
    attempt = job.attempts.get()
    # Our process died, not the host: the workers asked the host for its result again,
    # checked it against its hash and bill, had the verifier re-score it, and paid it.
    assert attempt.state == AttemptState.ACCEPTED and attempt.result_hash
    record = VerificationRecord.objects.get(attempt=attempt)
    assert record.state == VerificationState.PASSED, record.reason
    assert record.positions == attempt.tokens == attempt.tokens_billed > 5
    assert int(job.paid_wei) == int(attempt.paid_wei) == attempt.tokens_billed * 10**9
    assert loops.run_async(status()) == JobStatus.COMPLETED
    # And the user has the whole text the host generated, not the part we saw before dying.
    assert (job.state, job.tokens) == (JobState.COMPLETED, attempt.tokens)
    # The hash on chain is the keyed commitment to that text, under the attempt's secret.
    async def chain_id():
        return (await platform_chain()).deployment.chain_id

    key = job_result_key(record.request["seed"], loops.run_async(chain_id()),
                         attempt.chain_job_id)
    assert commitment_matches(job.text, key, attempt.result_hash)
    assert hashlib.sha256(job.text.encode()).hexdigest() != attempt.result_hash.removeprefix(
        "0x")
