"""The host's HTTP and WebSocket server (aiohttp, one port) and its chain duties:
register, watch for jobs, claim, stream, store, submit the result, withdraw earnings.

Two ways to be paid (protocol.py): a job posted on chain with escrow, claimed, its result
submitted; or a channel stream, paid by the vouchers the client sends as tokens arrive
(marketplace.host.payments, docs/sessions.md), with nothing on chain per job: the host
closes the channel with its latest voucher when the payer exits, or when it chooses."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import secrets
import time
from dataclasses import dataclass, replace

from aiohttp import WSCloseCode, web
from eth_account import Account
from eth_account.messages import encode_defunct
from pydantic import ValidationError

from marketplace import e2e, sampling
from marketplace.chain.channels import Channels, voucher_from_json
from marketplace.chain.contracts import Chain, JobStatus, model_key
from marketplace.chain.errors import ChainError
from marketplace.chain.events import follow
from marketplace.chain.tx import RPC_FAULTS
from marketplace.host.backends import Backend
from marketplace.host.behaviours import behaviour_named
from marketplace.host.cid import ResultStore
from marketplace.host.disputes import DisputeWatch
from marketplace.host.guard import ConnectionCaps, HandshakeFailures
from marketplace.host.link import Link, StreamRefused, parse_object
from marketplace.host.payments import Credit, CreditTerms
from marketplace.host.sessions import Session, session_key
from marketplace.host.vouchers import ChannelWatch, VoucherBook, VoucherDesk, VoucherRefused
from marketplace.host.worker import Busy, ModelWorker, Work, loop_callbacks
from marketplace.protocol import (
    MAX_MESSAGE_BYTES,
    PLAINTEXT_VERSION,
    PROTOCOL_VERSION,
    VERSIONS,
    Ack,
    Cancel,
    Code,
    GenerationRequest,
    Opening,
    QuoteRequest,
    StreamInit,
    VoucherMessage,
    challenge_message,
    error,
)
from observability.net import client_network

log = logging.getLogger(__name__)
VERSION = "1.0.0"
HIGH_WATERMARK = 256  # unacknowledged tokens before the host pauses sending
LOW_WATERMARK = 64  # ... and resumes when the client is back within this many
CHECKPOINT_EVERY = 32
SEEN_SIGNATURES_MAX = 100_000
JOB_CLIENTS_MAX = 100_000
RETRY_AFTER_S = 5  # what a BUSY answer over HTTP suggests
# aiohttp buffers a WebSocket message up to this before handing it over; between
# MAX_MESSAGE_BYTES and this the host answers TOO_LARGE, beyond it aiohttp closes the
# socket (1009) as soon as a frame header declares the length, reading none of it.
WS_READ_LIMIT = 2 * MAX_MESSAGE_BYTES
# How long closing a stream waits for the peer's close frame (aiohttp's default is 10 s):
# a client that never sends one would hold its connection that much longer.
CLOSE_WAIT_S = 2.0
# A refusal that says nothing about the caller: it does not count as their failure.
HOST_SIDE = frozenset({Code.BUSY, Code.CHAIN_UNAVAILABLE, Code.INTERNAL})
# After a channel stream's end, how long the host waits for the client's last voucher.
FINAL_VOUCHER_WAIT_S = 5.0
# The default credit limit, in tokens at the host's price.
CREDIT_TOKENS = 64


@dataclass
class HostConfig:
    public_url: str
    price_per_token_wei: int
    stake_wei: int = 10**17
    region: str = "local"
    capacity: int = 8
    watch_chain: bool = True
    withdraw_every_s: float = 60.0
    # How often the host looks for its disputes past their arbitration deadline.
    expire_disputes_every_s: float = 15.0
    max_connections: int = 256
    max_connections_per_ip: int = 32
    handshake_timeout_s: float = 10.0
    failed_handshakes_per_minute: int = 20
    # A connection with no request in progress (idle, or still trickling its first
    # request's headers) is closed after this; aiohttp's own default is an hour.
    idle_timeout_s: float = 75.0
    # "honest", or a hostile behaviour for tests (marketplace.host.behaviours).
    behaviour: str = "honest"
    # Payment channels (docs/sessions.md): taken when the deployment has the contract.
    channels: bool = True
    credit_limit_wei: int | None = None  # None: CREDIT_TOKENS at the price
    vouchers_every: int = 16
    payment_wait_s: float = 30.0
    watch_channels_every_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_ip", "handshake_timeout_s",
                     "failed_handshakes_per_minute", "idle_timeout_s", "vouchers_every",
                     "payment_wait_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


class HostNode:
    def __init__(self, *, backend: Backend, chain: Chain, store: ResultStore,
                 config: HostConfig):
        self.backend = backend
        self.chain = chain
        self.store = store
        self.behaviour = behaviour_named(config.behaviour)
        self.config = replace(config, price_per_token_wei=self.behaviour.price(
            config.price_per_token_wei))
        self.worker = ModelWorker(backend, capacity=config.capacity)
        self.address = chain.address
        self.sessions: dict[int | tuple[int, int], Session] = {}  # by Session.key
        # Each challenge nonce is fresh, so an old signature can never verify again; the
        # record only names the failure. Bounded, oldest forgotten first.
        self.seen_signatures: dict[str, None] = {}
        # A job's client never changes: once read (or seen in JobPosted), a stream's
        # signature is checked against it with no chain call. Bounded, oldest first out.
        self.job_clients: dict[int, str] = {}
        self.caps = ConnectionCaps(total=config.max_connections,
                                   per_network=config.max_connections_per_ip)
        self.failures = HandshakeFailures(per_minute=config.failed_handshakes_per_minute)
        self.claim_locks: dict[int, asyncio.Lock] = {}
        self.posted: dict[int, dict] = {}  # JobPosted arguments seen by the watcher
        self.tasks: list[asyncio.Task] = []
        # The chain key is the stream's key too (marketplace.e2e): a client checks it
        # against the address registered in NodeRegistry.
        self.e2e_key = e2e.private_key(bytes(chain.sender.account.key))
        self.public_key = "0x" + e2e.compressed(self.e2e_key).hex()
        self.credit: Credit | None = None
        self.channel_watch: ChannelWatch | None = None
        if self.config.channels and chain.deployment.channels:
            channels = Channels(chain)
            book = VoucherBook(store.directory.parent / "vouchers.sqlite3")
            limit = self.config.credit_limit_wei
            if limit is None:
                limit = CREDIT_TOKENS * self.config.price_per_token_wei
            self.credit = Credit(VoucherDesk(channels, book, self.address),
                                 CreditTerms(limit_wei=limit,
                                             vouchers_every=self.config.vouchers_every,
                                             wait_s=self.config.payment_wait_s))
            self.channel_watch = ChannelWatch(channels, book, self.address,
                                              from_block=chain.deployment.block)

    # ---- lifecycle ------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_MESSAGE_BYTES,
                              middlewares=[self._cap_connections])
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/capabilities", self.capabilities)
        app.router.add_post("/v1/quote", self.quote)
        app.router.add_get("/v1/stream", self.stream)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    def runner(self) -> web.AppRunner:
        return web.AppRunner(self.app(), access_log=None,
                             keepalive_timeout=self.config.idle_timeout_s)

    async def _on_startup(self, app) -> None:
        await self.register()
        if self.config.watch_chain:
            self.tasks.append(asyncio.create_task(self._watch()))
        self.tasks.append(asyncio.create_task(self._withdraw_loop()))
        self.tasks.append(asyncio.create_task(self._reap()))
        disputes = DisputeWatch(self.chain, self.store.directory.parent / "disputes.json")
        self.tasks.append(asyncio.create_task(disputes.run(self.config.expire_disputes_every_s)))
        if self.channel_watch is not None:
            self.tasks.append(asyncio.create_task(
                self.channel_watch.run(self.config.watch_channels_every_s)))

    async def _on_cleanup(self, app) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.worker.stop()
        if self.credit is not None:
            self.credit.desk.book.close()
        await self.chain.close()

    def metadata(self) -> dict:
        return {"publicKey": self.public_key, "region": self.config.region,
                "hardware": {"cpus": os.cpu_count(), "backend": self.backend.name},
                "version": VERSION}

    async def register(self) -> None:
        node = await self.chain.get_node(self.address)
        prices = {self.backend.model_id: self.config.price_per_token_wei}
        if node.stake == 0:
            stake = max(self.config.stake_wei, await self.chain.min_stake())
            await self.chain.register(api_url=self.config.public_url, metadata=self.metadata(),
                                      prices=prices, stake=stake)
            log.info("registered %s at %s", self.address, self.config.public_url)
        else:
            await self.chain.update_node(api_url=self.config.public_url,
                                         metadata=self.metadata(), prices=prices)
            log.info("updated registration of %s", self.address)

    # ---- connection caps ------------------------------------------------------------

    @web.middleware
    async def _cap_connections(self, request: web.Request, handler) -> web.StreamResponse:
        # Liveness is the process, not its load: an orchestrator's probe is never refused.
        if request.path == "/health":
            return await handler(request)
        # The socket's peer, never a forwarded header: anyone can write one of those.
        network = client_network(request.remote)
        refused = self.caps.enter(network)
        if refused is not None:
            return await _busy(request, refused)
        try:
            return await handler(request)
        finally:
            self.caps.leave(network)

    # ---- HTTP ---------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "address": self.address,
                                  "model": self.backend.model_id, "version": VERSION})

    def channel_terms(self) -> dict | None:
        if self.credit is None:
            return None
        return {"contract": self.chain.deployment.channels,
                "creditLimitWei": str(self.credit.terms.limit_wei),
                "vouchersEvery": self.credit.terms.vouchers_every}

    async def capabilities(self, request: web.Request) -> web.Response:
        return web.json_response(self.capabilities_body())

    def capabilities_body(self) -> dict:
        """GET /v1/capabilities; also the body of the host's signed record (marketplace.p2p)."""
        return {
            "version": VERSION,
            "protocol": PROTOCOL_VERSION,
            "address": self.address,
            "publicKey": self.public_key,
            "backend": self.backend.name,
            "models": [{"id": self.backend.model_id,
                        "pricePerToken": str(self.config.price_per_token_wei)}],
            "load": {"active": self.worker.active, "slots": self.worker.parallel,
                     "served": self.worker.served},
            "queue": {"length": self.worker.queued, "capacity": self.worker.capacity},
            "channels": self.channel_terms(),
        }

    async def quote(self, request: web.Request) -> web.Response:
        try:
            body = QuoteRequest.model_validate_json(await request.read())
        except ValidationError as exc:
            return web.json_response(error(Code.MALFORMED, _first_error(exc)), status=400)
        if body.model != self.backend.model_id:
            return web.json_response(
                error(Code.UNKNOWN_MODEL, f"this host serves {self.backend.model_id} only"),
                status=404)
        if self.worker.queued >= self.worker.capacity:
            return web.json_response(error(Code.BUSY, "the queue is full"), status=503,
                                     headers={"Retry-After": str(RETRY_AFTER_S)})
        price = self.config.price_per_token_wei
        offered = int(body.max_price_per_token)
        terms = {"model": body.model, "maxTokens": body.max_tokens, "pricePerToken": str(price)}
        if offered >= price:
            return web.json_response({"accepted": True, "terms": terms})
        return web.json_response({"accepted": False, "counter": terms,
                                  "reason": f"the price is {price} wei per token"})

    # ---- WebSocket ----------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=WS_READ_LIMIT, heartbeat=20,
                                   timeout=CLOSE_WAIT_S)
        await ws.prepare(request)
        network = client_network(request.remote)
        close_code = WSCloseCode.OK
        link = Link(ws)
        try:
            if self.failures.exhausted(network):
                raise StreamRefused(Code.BUSY, "too many failed handshakes from your "
                                               "address; try again in a minute")
            nonce = secrets.token_hex(16)
            await ws.send_json({"type": "challenge", "nonce": nonce,
                                "version": PROTOCOL_VERSION, "publicKey": self.public_key})
            try:
                init = await self._read_init(link)
                job_request = self._open(link, init, nonce)
                session = await self._authorize(init, nonce, job_request)
            except StreamRefused as exc:
                if exc.code not in HOST_SIDE:
                    self.failures.record(network)
                raise
            await self._serve(link, init, session)
        except StreamRefused as exc:
            if exc.code == Code.BUSY:
                close_code = WSCloseCode.TRY_AGAIN_LATER
            if not ws.closed:
                await link.send(error(exc.code, exc.message))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except Exception as exc:  # one bad stream never takes the host down
            log.exception("stream failed")
            with contextlib.suppress(Exception):
                await link.send(error(Code.INTERNAL, type(exc).__name__))
        finally:
            await ws.close(code=close_code)
        return ws

    async def _read_init(self, link: Link) -> StreamInit:
        limit_s = self.config.handshake_timeout_s
        try:
            async with asyncio.timeout(limit_s):
                raw = await link.receive()
        except TimeoutError:
            raise StreamRefused(Code.HANDSHAKE_TIMEOUT,
                                f"no answer to the challenge within {limit_s:g} s") from None
        if raw is None:
            raise ConnectionResetError
        try:
            init = StreamInit.model_validate(raw)
        except ValidationError as exc:
            raise StreamRefused(Code.MALFORMED, _first_error(exc)) from None
        if init.version not in VERSIONS:
            raise StreamRefused(Code.UNSUPPORTED_VERSION,
                                f"this host speaks protocols {PLAINTEXT_VERSION} and "
                                f"{PROTOCOL_VERSION}")
        return init

    def _open(self, link: Link, init: StreamInit, nonce: str) -> GenerationRequest | None:
        """The stream's keys and the job's request: protocol 3 opens its sealed first
        frame; protocol 2 has the request in clear."""
        if init.version == PLAINTEXT_VERSION:
            if init.ephemeral_key or init.salt or init.sealed:
                raise StreamRefused(Code.MALFORMED, f"protocol {PLAINTEXT_VERSION} carries no "
                                                    "keys; encrypted streams are protocol "
                                                    f"{PROTOCOL_VERSION}")
            link.gzip = init.compression == "gzip"
            return init.request
        if init.request is not None or init.compression is not None:
            # Compressing before sealing would tell an onlooker the text's redundancy; the
            # request travels sealed, never in the init.
            raise StreamRefused(Code.MALFORMED, "an encrypted stream carries its request "
                                                "sealed and is never compressed")
        if not (init.ephemeral_key and init.salt and init.sealed):
            raise StreamRefused(Code.MALFORMED, "an encrypted stream's init needs "
                                                "ephemeralKey, salt and sealed")
        info = e2e.info(chain_id=self.chain.deployment.chain_id, job_id=init.job_id,
                        host_address=self.address, nonce=nonce)
        try:
            channel = e2e.host_channel(self.e2e_key, bytes.fromhex(init.ephemeral_key[2:]),
                                       bytes.fromhex(init.salt[2:]), info)
            opened = channel.open(base64.b64decode(init.sealed, validate=True))
        except e2e.SealError as exc:
            raise StreamRefused(exc.code, exc.message) from None
        except binascii.Error:
            raise StreamRefused(Code.MALFORMED, "sealed: not base64") from None
        link.channel = channel  # from here on, refusals too go sealed
        try:
            return Opening.model_validate(parse_object(opened)).request
        except ValidationError as exc:
            raise StreamRefused(Code.MALFORMED, _first_error(exc)) from None

    async def _authorize(self, init: StreamInit, nonce: str,
                         request: GenerationRequest | None) -> Session:
        # Everything up to the signer's address is local; the chain is read only for a
        # job whose client the host does not know yet, and never for a signature that
        # does not even recover.
        if init.node_id.lower() != self.address.lower():
            raise StreamRefused(Code.NOT_YOUR_JOB, "the stream is addressed to another node")
        if init.signature in self.seen_signatures:
            raise StreamRefused(Code.REPLAYED_NONCE, "this signature was already used")
        message = encode_defunct(text=challenge_message(nonce, init.job_id, init.node_id,
                                                        init.ephemeral_key, init.salt,
                                                        init.channel_id))
        try:
            signer = Account.recover_message(message, signature=init.signature).lower()
        except Exception:
            raise StreamRefused(Code.BAD_SIGNATURE, "the signature does not verify") from None
        if init.channel_id is not None:
            session = await self._authorize_channel(init, signer, request)
        else:
            session = await self._authorize_job(init, signer, request)
        self.seen_signatures[init.signature] = None
        if len(self.seen_signatures) > SEEN_SIGNATURES_MAX:
            del self.seen_signatures[next(iter(self.seen_signatures))]
        if init.checkpoint is not None and init.checkpoint >= len(session.tokens) and (
                session.done or init.checkpoint > len(session.tokens)):
            raise StreamRefused(Code.BAD_CHECKPOINT,
                                f"checkpoint {init.checkpoint} is beyond the "
                                f"{len(session.tokens)} tokens generated")
        return session

    async def _authorize_channel(self, init: StreamInit, signer: str,
                                 request: GenerationRequest | None) -> Session:
        if self.credit is None:
            raise StreamRefused(Code.CHANNELS_UNSUPPORTED, "this host takes per-job escrow "
                                                           "only")
        if init.version != PROTOCOL_VERSION:
            raise StreamRefused(Code.MALFORMED, f"a channel stream is protocol "
                                                f"{PROTOCOL_VERSION} (encrypted)")
        channel_id = init.channel_id
        await self.credit.channel(channel_id, signer)
        key = session_key(init.job_id, channel_id)
        session = self.sessions.get(key)
        if session is not None:
            return session
        if request is None:
            raise StreamRefused(Code.REQUEST_REQUIRED, "the first stream of a job must carry "
                                                       "its request")
        if request.model != self.backend.model_id:
            raise StreamRefused(Code.UNKNOWN_MODEL, f"this host serves {self.backend.model_id}")
        price = self.config.price_per_token_wei
        if not self.credit.admits(channel_id, price):
            raise StreamRefused(Code.PAYMENT_REQUIRED,
                                f"channel {channel_id} owes {self.credit.unpaid(channel_id)} "
                                "wei already; pay it before starting another stream")
        if self.worker.queued >= self.worker.capacity:
            raise StreamRefused(Code.BUSY, "the queue is full")
        session = Session(job_id=init.job_id, request=request, channel_id=channel_id,
                          price_per_token_wei=price)
        self._generate(session)
        self.sessions[key] = session
        return session

    async def _authorize_job(self, init: StreamInit, signer: str,
                             request: GenerationRequest | None) -> Session:
        job = None
        client = self.job_clients.get(init.job_id)
        if client is None:
            job = await self._read_job(init.job_id)
            if job.status == JobStatus.NONE:
                raise StreamRefused(Code.JOB_NOT_FOUND, f"job {init.job_id} is not on chain")
            client = self._remember_client(init.job_id, job.client)
        if signer != client:
            raise StreamRefused(Code.BAD_SIGNATURE, "the signature is not the job's client's")
        session = self.sessions.get(init.job_id)
        if session is None:
            session = await self._begin(init, job or await self._read_job(init.job_id),
                                        request)
        return session

    async def _read_job(self, job_id: int):
        try:
            return await self.chain.get_job(job_id)
        except ChainError as exc:
            raise StreamRefused(Code.CHAIN_UNAVAILABLE, exc.message) from None

    def _remember_client(self, job_id: int, client: str) -> str:
        client = client.lower()
        self.job_clients[job_id] = client
        if len(self.job_clients) > JOB_CLIENTS_MAX:
            del self.job_clients[next(iter(self.job_clients))]
        return client

    async def _begin(self, init: StreamInit, job, request: GenerationRequest | None) -> Session:
        if request is None:
            raise StreamRefused(Code.REQUEST_REQUIRED, "the first stream of a job must carry "
                                                       "its request")
        if request.model != self.backend.model_id or not job.serves(request.model):
            raise StreamRefused(Code.UNKNOWN_MODEL,
                                f"this host serves {self.backend.model_id}; the job is for "
                                "another model")
        if request.max_tokens > job.max_tokens:
            raise StreamRefused(Code.PROMPT_MISMATCH, "the request asks for more tokens than "
                                                      "the job pays for")
        posted = self.posted.get(init.job_id)
        if posted is None:
            posted = await self.chain.job_posted_event(init.job_id,
                                                       self.chain.deployment.block)
            if posted is not None:
                self.posted[init.job_id] = posted  # a retry by the same client reads no logs
        if posted is None or posted["promptHash"] != request.digest():
            raise StreamRefused(Code.PROMPT_MISMATCH,
                                "the request does not match the prompt hash on chain")
        lock = self.claim_locks.setdefault(init.job_id, asyncio.Lock())
        async with lock:
            if init.job_id in self.sessions:
                return self.sessions[init.job_id]
            if self.worker.queued >= self.worker.capacity:
                # Refuse before claiming, so the job stays open for another host.
                raise StreamRefused(Code.BUSY, "the queue is full")
            if job.status == JobStatus.POSTED:
                job = await self.chain.get_job(init.job_id)  # the watcher may have claimed it
            if job.status == JobStatus.POSTED:
                await self._claim(init.job_id, request.model)
            elif job.host.lower() != self.address.lower() or job.status != JobStatus.CLAIMED:
                raise StreamRefused(Code.NOT_YOUR_JOB,
                                    f"job {init.job_id} is not claimed by this host")
            session = Session(job_id=init.job_id, request=request)
            self._generate(session)
            self.sessions[init.job_id] = session
            return session

    async def _claim(self, job_id: int, model: str) -> None:
        try:
            await self.chain.claim_job(job_id, model)
        except ChainError as exc:
            raise StreamRefused(Code.NOT_YOUR_JOB, f"cannot claim job {job_id}: {exc.message}") \
                from None

    def _generate(self, session: Session) -> None:
        loop = asyncio.get_running_loop()

        def done(err: str | None) -> None:
            session.finish(err)
            # At rest, only ciphertext that the job's client alone can open, under the
            # hash of that ciphertext (docs/encryption.md, "At rest").
            session.cid = self.store.put(e2e.seal_result(session.text, session.result_key))
            if session.reaped or session.channel_id is not None:
                # Reaped: the client left and never came back: no delivery, no claim for
                # payment; the job is refunded through the contract's timeout path. A
                # channel stream is paid by its vouchers: nothing of it goes on chain.
                session.submitted.set()
                return
            self.tasks.append(asyncio.create_task(self._submit(session)))

        on_token, on_done = loop_callbacks(loop, session.add, done)
        seed = bytes.fromhex(session.request.seed)
        key = sampling.job_key(seed, self.chain.deployment.chain_id, session.job_id)
        session.result_key = e2e.result_key(seed, self.chain.deployment.chain_id,
                                            session.job_id)
        session.work = Work(request=self.behaviour.generation(session.request),
                            on_token=on_token, on_done=on_done, key=key)
        try:
            self.worker.submit(session.work)
        except Busy as exc:
            raise StreamRefused(Code.BUSY, str(exc)) from None

    async def _submit(self, session: Session) -> None:
        if not session.tokens:
            session.submitted.set()
            return
        try:
            session.submitted_tx = await self.chain.submit_result(
                session.job_id, result_hash=bytes.fromhex(session.result_hash),
                cid=session.cid, tokens_used=self.behaviour.billed(
                    len(session.tokens), session.request.max_tokens))
        except ChainError as exc:
            log.error("could not submit job %s: %s", session.job_id, exc)
        finally:
            session.submitted.set()

    async def _serve(self, link: Link, init: StreamInit, session: Session) -> None:
        index = 0 if init.checkpoint is None else init.checkpoint + 1
        state = {"acked": index - 1, "cancelled": False}
        ack_event = asyncio.Event()
        send = link.send

        async def read_client() -> None:
            while True:
                raw = await link.receive()
                if raw is None:
                    return
                kind = raw.get("type")
                try:
                    if kind == "ack":
                        state["acked"] = max(state["acked"], Ack.model_validate(raw).index)
                        ack_event.set()
                    elif kind == "cancel":
                        Cancel.model_validate(raw)
                        state["cancelled"] = True
                        if session.work is not None:
                            session.work.cancel.set()
                    elif kind == "voucher" and session.channel_id is not None:
                        await self._voucher(session, VoucherMessage.model_validate(raw))
                    else:
                        await send(error(Code.MALFORMED, f"unexpected message type {kind!r}"))
                except ValidationError as exc:
                    await send(error(Code.MALFORMED, _first_error(exc)))

        session.attach()
        self.behaviour.stream_started()
        sent = 0
        reader = asyncio.create_task(read_client())
        try:
            await send({"type": "resume" if init.checkpoint is not None else "checkpoint",
                        "data": {"index": index - 1, "generated": len(session.tokens)}})
            while True:
                while index < len(session.tokens):
                    if reader.done():
                        reader.result()  # a refusal of what the client sent ends it now
                        return
                    if index - state["acked"] > HIGH_WATERMARK:
                        await send({"type": "pause", "data": {"index": index - 1}})
                        while index - state["acked"] > LOW_WATERMARK and not reader.done():
                            ack_event.clear()
                            acked = asyncio.ensure_future(ack_event.wait())
                            try:
                                await asyncio.wait([reader, acked], timeout=30,
                                                   return_when=asyncio.FIRST_COMPLETED)
                            finally:
                                acked.cancel()
                        if reader.done():
                            return
                        await send({"type": "resume", "data": {"index": index - 1}})
                    if session.channel_id is not None and index >= session.billed:
                        if not await self._credit(session, index, reader, send):
                            return
                        self.credit.charge(session.channel_id, session.price_per_token_wei)
                        session.billed = index + 1
                    message = {"type": "token", "index": index,
                               "content": session.tokens[index],
                               "timestamp": session.timestamps[index]}
                    if session.metadata[index] is not None:
                        message["metadata"] = session.metadata[index]
                    await self.behaviour.token(link, message, send, sent=sent)
                    sent += 1
                    index += 1
                    if index % CHECKPOINT_EVERY == 0:
                        await send({"type": "checkpoint", "data": {"index": index - 1}})
                if session.done:
                    await send({"type": "end", "data": {
                        "tokens": len(session.tokens), "resultHash": session.result_hash,
                        "cid": session.cid, "cancelled": state["cancelled"],
                        "error": session.error}})
                    if session.channel_id is not None:
                        # The client's last voucher comes after the end: it covers at least
                        # what the channel owed then, this stream's tokens included.
                        await self.credit.wait_until(
                            session.channel_id, self.credit.owed(session.channel_id), reader,
                            FINAL_VOUCHER_WAIT_S)
                    return
                changed = asyncio.ensure_future(session.changed.wait())
                try:
                    await asyncio.wait([reader, changed], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
                if reader.done():
                    reader.result()  # re-raise a refusal from the client's side
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            session.detach()

    async def _voucher(self, session: Session, message: VoucherMessage) -> None:
        """Keep a voucher of the stream's channel (durably, before anything more is sent);
        a voucher refused for anything but being stale ends the stream."""
        if message.channel_id != session.channel_id:
            raise StreamRefused("NOT_YOUR_CHANNEL", "the voucher is for another channel than "
                                                    "the stream's")
        try:
            voucher = voucher_from_json(message.model_dump(by_alias=True))
            await self.credit.pay(voucher)
        except ValueError as exc:
            code = exc.code if isinstance(exc, VoucherRefused) else "BAD_VOUCHER"
            if session.work is not None:
                session.work.cancel.set()
            raise StreamRefused(code, str(exc)) from None
        except (ChainError, *RPC_FAULTS) as exc:
            raise StreamRefused(Code.CHAIN_UNAVAILABLE, f"cannot check the voucher: {exc}") \
                from None

    async def _credit(self, session: Session, index: int, reader: asyncio.Task, send) -> bool:
        """Whether token `index` of a channel stream may go: unpaid work on the channel
        stays within the credit limit, or a voucher comes in time (the stream pauses
        meanwhile). When none comes, the stream ends with PAYMENT_REQUIRED and its
        generation stops."""
        channel_id, price = session.channel_id, session.price_per_token_wei
        if self.credit.admits(channel_id, price):
            return True
        await send({"type": "pause", "data": {
            "index": index - 1, "reason": Code.PAYMENT_REQUIRED,
            "owedWei": str(self.credit.unpaid(channel_id))}})
        if await self.credit.wait_paid(channel_id, price, reader, self.config.payment_wait_s):
            await send({"type": "resume", "data": {"index": index - 1}})
            return True
        if session.work is not None:
            session.work.cancel.set()
        if not reader.done():
            await send(error(Code.PAYMENT_REQUIRED,
                             f"{self.credit.unpaid(channel_id)} wei unpaid on channel "
                             f"{channel_id} after {self.config.payment_wait_s:g} s"))
        return False

    # ---- background duties ----------------------------------------------------------

    async def _watch(self) -> None:
        """Claim jobs we may take as they are posted (the stream claims too, on demand)."""
        mine = model_key(self.backend.model_id)
        start = await self.chain.w3.eth.block_number
        async for event in follow(self.chain.market, ["JobPosted"], from_block=start,
                                  poll_s=0.25):
            args = event.args
            if args["modelKey"] != mine:
                continue
            self._remember_client(args["jobId"], args["client"])
            assigned = args["assignedHost"]
            if int(assigned, 16) != 0 and assigned.lower() != self.address.lower():
                continue
            if args["maxPricePerToken"] < self.config.price_per_token_wei:
                continue
            if args["deadline"] <= time.time():
                continue
            if self.worker.queued >= self.worker.capacity:
                continue  # a job we could not start soon is better left to another host
            self.posted[args["jobId"]] = dict(args)
            lock = self.claim_locks.setdefault(args["jobId"], asyncio.Lock())
            async with lock:
                job = await self.chain.get_job(args["jobId"])
                if job.status == JobStatus.POSTED:
                    try:
                        await self.chain.claim_job(args["jobId"], self.backend.model_id)
                    except ChainError as exc:
                        log.info("did not claim job %s: %s", args["jobId"], exc.code)

    async def _withdraw_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.withdraw_every_s)
            try:
                if await self.chain.withdrawable(self.address) > 0:
                    await self.chain.withdraw()
            except ChainError as exc:
                log.warning("withdrawal failed: %s", exc)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.expired(now):
                    # Delivered and settled on our side: nobody can resume it any more.
                    self.sessions.pop(session.key, None)
                    if session.channel_id is None:
                        self.claim_locks.pop(session.job_id, None)
                        self.posted.pop(session.job_id, None)
                    continue
                if session.abandoned(now) and session.work is not None:
                    log.info("job %s abandoned by its client; stopping", session.job_id)
                    session.reaped = True
                    session.work.cancel.set()


async def _busy(request: web.Request, message: str) -> web.StreamResponse:
    """BUSY in the protocol's shape: an error message and close 1013 (try again later) on
    the stream, a 503 with Retry-After over HTTP."""
    body = error(Code.BUSY, message)
    ws = web.WebSocketResponse(timeout=CLOSE_WAIT_S)
    if request.path == "/v1/stream" and ws.can_prepare(request).ok:
        await ws.prepare(request)
        await ws.send_json(body)
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"BUSY")
        return ws
    return web.json_response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "message"
    return f"{where}: {err.get('msg')}"


