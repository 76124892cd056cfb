"""Hostile hosts on the devnet, each beside an honest one: real host processes started
with `manage.py runhost --behaviour NAME` (marketplace/host/behaviours.py), anvil, our
contracts and the client's runner. The client refuses what a host sends past its bounds
or outside the protocol, takes the host's text back, and finishes on the honest host,
which alone is paid. Hosts registered at addresses inside our network are never
contacted at all."""

from __future__ import annotations

import asyncio
import socket
import threading
import tracemalloc
import uuid

import aiohttp
import pytest
from aiohttp import web
from asgiref.sync import sync_to_async

from marketplace.chain.contracts import JobStatus
from marketplace.client import discovery, pool
from marketplace.client.bounded import Limits
from marketplace.client.errors import ClientError
from marketplace.client.negotiation import negotiate
from marketplace.client.ranking import Candidate
from marketplace.client.refunds import refund_abandoned
from marketplace.client.stream import stream_job
from marketplace.health import health_probes_run
from marketplace.host.behaviours import MALFORMED
from marketplace.models import AttemptState, Job, JobAttempt, JobState
from marketplace.services import JobSpec, run_job
from marketplace.wallet import platform_chain
from observability.metrics import hosts_refused
from tests.conftest import MODEL, free_port
from tests.marketplace.host.conftest import post_for, request_for, signer_for

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE_PRICE = 10**9  # the cheaper, so that the client tries it first
HONEST_PRICE = 2 * 10**9
MiB = 1024 * 1024


def start_pair(network, behaviour: str):
    return network.start_hosts({"host-1": HOSTILE_PRICE, "host-2": HONEST_PRICE},
                               args={"host-1": ["--behaviour", behaviour]})


class Reader:
    """Reads a job as the writer's page does: tokens in order, taken back on REWOUND.
    At each REWOUND it also reads the job's row, as a page that reconnects would. It
    measures the memory this process allocates while the first host has the job (from
    its post to the failover: Python's allocations, traced)."""

    def __init__(self, job_id: uuid.UUID):
        self.job_id = job_id
        self.seen: list[str] = []
        self.rewound: list[int] = []
        self.saved_text_at_rewind: list[str] = []
        self.first_host_peak: int | None = None

    async def on_token(self, index: int, text: str) -> None:
        assert index == len(self.seen)  # no gap and no repeat, whoever sends
        self.seen.append(text)

    async def on_state(self, state: str, detail: dict) -> None:
        if state == "POSTED" and self.first_host_peak is None and not tracemalloc.is_tracing():
            tracemalloc.start()
        if state == "FAILOVER" and tracemalloc.is_tracing():
            self.first_host_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        if state == "REWOUND":
            self.rewound.append(detail["index"])
            del self.seen[detail["index"]:]
            job = await Job.objects.aget(pk=self.job_id)
            self.saved_text_at_rewind.append(job.text)

    @property
    def text(self) -> str:
        return "".join(self.seen)


async def settled_unpaid(chain, attempt) -> None:
    """The hostile host finishes generating and submits its result on chain anyway; the
    beat's sweep of abandoned attempts disputes it, and it is paid nothing."""
    for _ in range(200):
        if (await chain.get_job(attempt.chain_job_id)).status == JobStatus.SUBMITTED:
            break
        await asyncio.sleep(0.1)
    assert await refund_abandoned(chain) == 1
    await attempt.arefresh_from_db()
    assert attempt.state == AttemptState.DISPUTED
    assert not attempt.paid_wei
    assert await chain.withdrawable(attempt.host_address) == 0


@pytest.mark.parametrize("behaviour, compression, code", [
    # On a plaintext gzip stream (protocol 2), refused by the inflate bound; an encrypted
    # stream inflates nothing, and the bomb is then bytes that are not JSON.
    ("gzip-bomb", "gzip", "HOST_TOO_LARGE"),
    ("gzip-bomb", None, "HOST_MALFORMED"),
    ("huge-token", None, "HOST_TOO_LARGE"),  # refused by the frame bound, from its header
    ("malformed", None, "HOST_MALFORMED"),  # a token without its text
    ("truncate", None, "HOST_UNAVAILABLE"),  # every connection cut after three tokens
    ("stall", None, "HOST_UNAVAILABLE"),  # silent after three tokens, resumes included
])
async def test_a_hostile_host_is_refused_and_the_honest_one_alone_answers_and_is_paid(
        network, settings, behaviour, compression, code):
    settings.MARKETPLACE_STREAM_COMPRESSION = compression
    settings.MARKETPLACE_STREAM_ENCRYPTION = compression is None
    settings.MARKETPLACE_STALL_TIMEOUT_S = 2
    hostile, honest = start_pair(network, behaviour)
    chain = await platform_chain()
    job_id = uuid.uuid4()
    reader = Reader(job_id)

    try:
        outcome = await run_job(JobSpec(model=MODEL, prompt="Name three kinds of tree.",
                                        max_tokens=24, temperature=0.0), job_id=job_id,
                                on_token=reader.on_token, on_state=reader.on_state)
    finally:
        tracemalloc.stop()
    # The gzip bomb inflates to 48 MiB and the huge token is 4 MiB: the process held
    # neither, only about the bound (64 KiB) and the attempt's own bookkeeping.
    assert reader.first_host_peak is not None
    assert reader.first_host_peak < 2 * MiB, f"peak {reader.first_host_peak / MiB:.2f} MiB"

    assert outcome.host == honest.address and outcome.verified
    job = await Job.objects.aget(pk=job_id)
    bad, good = [a async for a in job.attempts.order_by("number")]
    assert (bad.host_address, bad.state, bad.error_code) == (
        hostile.address, AttemptState.ABANDONED, code)
    # What the hostile host did send was taken back, from the reader and from the row,
    # before the honest host began; the answer is the honest host's alone.
    if bad.tokens:
        assert reader.rewound == [0] and reader.saved_text_at_rewind == [""]
    else:
        assert reader.rewound == []  # nothing to take back
    assert good.start_index == 0 and good.state == AttemptState.ACCEPTED
    assert outcome.text == reader.text == job.text
    assert outcome.tokens == good.tokens == job.tokens
    assert job.state == JobState.COMPLETED
    # Paid: the honest host's tokens at its price, nothing else.
    assert outcome.cost_wei == good.tokens_billed * HONEST_PRICE == int(job.paid_wei)
    # Ranked out: the next jobs go to the honest host, though the hostile one is cheaper.
    for prompt in ("Name a river.", "Name a mountain."):
        later = await run_job(JobSpec(model=MODEL, prompt=prompt, max_tokens=8,
                                      temperature=0.0))
        assert [a.host_address async for a in JobAttempt.objects.filter(
            job_id=later.job_id)] == [honest.address]
    await settled_unpaid(chain, bad)


async def test_a_huge_token_inside_the_message_bound_is_refused_by_the_token_bound(
        network, settings):
    settings.MARKETPLACE_MAX_MESSAGE_BYTES = 8 * MiB  # lets the 4 MiB frame in
    hostile, honest = start_pair(network, "huge-token")
    outcome = await run_job(JobSpec(model=MODEL, prompt="Name a river.", max_tokens=16,
                                    temperature=0.0))
    assert outcome.host == honest.address
    job = await Job.objects.aget(pk=outcome.job_id)
    bad = await job.attempts.aget(number=1)
    assert (bad.host_address, bad.error_code, bad.tokens) == (
        hostile.address, "HOST_TOKEN_TOO_LARGE", 0)
    assert "A" * 100 not in job.text


@pytest.mark.parametrize("encrypt", [True, False])
async def test_every_kind_of_malformed_message_is_a_client_error_that_names_it(network,
                                                                              encrypt):
    """Inside sealed frames (the host seals what it sends) as in clear ones: the JSON in
    a frame that opens is held to the protocol just the same."""
    (hostile,) = network.start_hosts({"host-1": HOSTILE_PRICE},
                                     args={"host-1": ["--behaviour", "malformed"]})
    client = network.anvil.chain("platform")
    expected = {
        "missing-field": "token.content: Field required",
        "wrong-types": "token.index: Input should be a valid integer",
        "gap": "token 5 arrived after 2 tokens: a gap",
        "unknown-type": "does not match any of the expected tags",
        "not-json": "Invalid JSON",
        "end-without-figures": "its end message does not follow the protocol: tokens",
        "binary": "a binary frame on a stream that asked for no compression",
    }
    assert set(expected) == {name for name, _ in MALFORMED}
    for name, _ in MALFORMED:  # the host sends the next kind on each stream
        request = request_for(f"Say something about {name}.", max_tokens=8)
        posted = await post_for(client, hostile.address, request)
        received: list[str] = []

        async def on_token(text: str, received: list[str] = received) -> None:
            received.append(text)

        stream = stream_job(hostile.url, chain_job_id=posted.job_id,
                            chain_id=client.deployment.chain_id, node_id=hostile.address,
                            request=request, signer=signer_for(client), on_token=on_token,
                            encrypt=encrypt)
        if encrypt and name == "binary":
            # Every frame of an encrypted stream is binary: this one is a good message.
            assert (await stream).tokens == len(received)
            continue
        with pytest.raises(ClientError) as refused:
            await stream
        assert (refused.value.code, refused.value.permanent) == ("HOST_MALFORMED", False)
        assert expected[name] in refused.value.message, (name, refused.value.message)
        assert len(received) == 2  # the honest tokens before it


async def test_a_stream_stops_at_the_jobs_text_bound(network):
    (host,) = network.start_hosts({"host-1": HONEST_PRICE})
    client = network.anvil.chain("platform")
    request = request_for("Write a long paragraph about the sea.", max_tokens=64)
    posted = await post_for(client, host.address, request)
    received: list[str] = []

    async def on_token(text: str) -> None:
        received.append(text)

    limits = Limits(message_bytes=64 * 1024, compression_ratio=100, token_chars=1024,
                    job_chars=40)
    with pytest.raises(ClientError) as refused:
        await stream_job(host.url, chain_job_id=posted.job_id,
                         chain_id=client.deployment.chain_id, node_id=host.address,
                         request=request, signer=signer_for(client), on_token=on_token,
                         limits=limits)
    assert refused.value.code == "HOST_TEXT_TOO_LARGE"
    assert sum(map(len, received)) <= 40


async def test_a_job_whose_only_host_fails_keeps_none_of_its_text(network):
    network.start_hosts({"host-1": HOSTILE_PRICE},
                        args={"host-1": ["--behaviour", "truncate"]})
    job_id = uuid.uuid4()
    reader = Reader(job_id)
    with pytest.raises(ClientError) as failed:
        await run_job(JobSpec(model=MODEL, prompt="Name a mountain.", max_tokens=24,
                              temperature=0.0), job_id=job_id,
                      on_token=reader.on_token, on_state=reader.on_state)
    assert failed.value.code == "HOST_UNAVAILABLE"
    job = await Job.objects.aget(pk=job_id)
    attempt = await job.attempts.aget()
    assert attempt.tokens == 9  # three tokens on each of three connections
    assert reader.rewound == [0] and reader.seen == []
    assert (job.state, job.text, job.tokens, int(job.paid_wei)) == (JobState.FAILED, "", 0, 0)


# ---- host URLs --------------------------------------------------------------------------

class Listener:
    """A TCP port on one loopback address that counts the connections it accepts: what a
    service inside our network would see."""

    def __init__(self, address: str):
        self.sock = socket.create_server((address, 0))
        self.url = f"http://{address}:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def inside():
    """A service on 127.0.0.2, which the allow-list of these tests does not cover."""
    listener = Listener("127.0.0.2")
    yield listener
    listener.close()


@pytest.fixture
def only_our_host_loopback(settings):
    # The honest host runs on 127.0.0.1; the rest of loopback stands for our network.
    settings.MARKETPLACE_ALLOWED_HOST_NETWORKS = ["127.0.0.1/32"]


def refused_count() -> float:
    return hosts_refused.labels("HOST_URL_REFUSED")._value.get()


async def test_hosts_registered_inside_our_network_are_skipped_and_never_contacted(
        network, inside, only_our_host_loopback):
    (honest,) = network.start_hosts({"host-1": HONEST_PRICE})
    stake = 10**17
    for role, url in (("host-2", inside.url), ("host-3", "http://169.254.169.254/"),
                      ("host-4", "http://10.0.0.1:9000/")):
        await network.anvil.chain(role).register(
            api_url=url, metadata={}, prices={MODEL: HOSTILE_PRICE}, stake=stake)
    before = refused_count()

    outcome = await run_job(JobSpec(model=MODEL, prompt="Name a bird.", max_tokens=8,
                                    temperature=0.0))
    assert outcome.host == honest.address
    job = await Job.objects.aget(pk=outcome.job_id)
    assert [a.host_address async for a in job.attempts.all()] == [honest.address]
    assert refused_count() - before == 3
    assert inside.connections == 0
    # /health's probe skips them too: registered, not answering, never asked.
    found = (await sync_to_async(health_probes_run)())["hosts"]["detail"]
    assert (found["registered"], found["answering"]) == (4, 1)
    assert inside.connections == 0


async def test_a_refused_host_url_is_sent_no_quote_and_no_stream(inside,
                                                                  only_our_host_loopback):
    for url in (inside.url, inside.url.replace("http://", "ws://"),
                f"http://user@{inside.url.removeprefix('http://')}"):
        host = Candidate(address="0x" + "11" * 20, url=url, model=MODEL,
                         price_per_token_wei=HOSTILE_PRICE, probe_ms=1.0)
        request = request_for("Hello.")
        with pytest.raises(ClientError) as refused:
            await negotiate(host, request, max_price_per_token_wei=None)
        assert (refused.value.code, refused.value.permanent) == ("HOST_URL_REFUSED", False)
        with pytest.raises(ClientError) as refused:
            await stream_job(url, chain_job_id=1, chain_id=1, node_id=host.address,
                             request=request,
                             signer=lambda text: "0x", on_token=None)
        assert refused.value.code == "HOST_URL_REFUSED"
    assert inside.connections == 0


async def test_a_host_name_that_resolves_into_our_network_gets_no_connection(settings):
    listener = Listener("127.0.0.1")
    settings.MARKETPLACE_ALLOWED_HOST_NETWORKS = []
    try:
        port = listener.url.rsplit(":", 1)[1]
        # Past every check made before the request (as a rebound name would be), the
        # pool's resolver still refuses the address it resolves to.
        with pytest.raises(aiohttp.ClientConnectorDNSError) as refused:
            await pool.session().get(f"http://localhost:{port}/v1/capabilities")
        assert "not a public internet address" in str(refused.value.os_error)
        assert listener.connections == 0
        settings.MARKETPLACE_ALLOWED_HOST_NETWORKS = ["localhost"]
        # Reached, and hung up on (a close or a reset, as the listener's socket goes).
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await pool.session().get(f"http://localhost:{port}/v1/capabilities")
        assert listener.connections >= 1  # (aiohttp retries a GET the server hung up on)
    finally:
        listener.close()


async def test_a_host_that_redirects_is_not_followed(inside, only_our_host_loopback):
    async def capabilities(request):
        raise web.HTTPFound(f"{inside.url}/latest/meta-data/")

    app = web.Application()
    app.router.add_get("/v1/capabilities", capabilities)
    app.router.add_get("/v1/stream", capabilities)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        assert await discovery._probe("0x" + "22" * 20, f"http://127.0.0.1:{port}") is None
        with pytest.raises(ClientError) as refused:
            await stream_job(f"http://127.0.0.1:{port}", chain_job_id=1, chain_id=1,
                             node_id="0x" + "22" * 20, request=request_for("Hello."),
                             signer=lambda text: "0x", on_token=None)
        assert refused.value.code == "HOST_MALFORMED"
        assert "redirect" in refused.value.message
        assert inside.connections == 0
    finally:
        await runner.cleanup()
