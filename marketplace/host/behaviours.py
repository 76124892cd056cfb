"""Hostile hosts on demand: `manage.py runhost --behaviour NAME`.

For the tests, and for anyone who wants to watch the client defend itself
(docs/security.md, "Hostile hosts: bounded bytes"). A behaviour changes only what the host
sends on /v1/stream; the model, the claim and the result it submits on chain are the
honest host's. None of it runs unless --behaviour names it: a host is honest by default.

- `gzip-bomb`: the first token goes out as one gzip frame of about 48 KiB that inflates to
  48 MiB, whatever compression the client asked for.
- `huge-token`: the first token is 4 MiB of text, in one frame.
- `malformed`: two honest tokens, then a message the protocol does not allow; each stream
  gets the next of MALFORMED (a token without its text, fields of the wrong type, a gap in
  the indexes, an unknown type, text that is not JSON, an end without its figures, a
  binary frame nobody asked for).
- `truncate`: three tokens on each connection, then the connection is closed, resumes
  included: the stream never ends.
- `stall`: three tokens, then silence on an open connection, resumes included.

A host that is honest but slow, for the figures (marketplace.figures, docs/trust.md):

- `half-speed`: a host on hardware half as fast. Each token goes out twice as long after
  the one before it as the model took to make it, and the first one FIRST_TOKEN_DELAY_S
  late (a slow start that stands out of the chain's own noise in TTFT).

And hosts that cheat on the work itself, which only the verifier sees (docs/trust.md): the
stream follows the protocol and the result committed on chain is what was streamed.

- `junk`: a fluent answer to another prompt (an advertisement), with that generation's
  own token ids and log-probabilities: every text check passes.
- `wrong-temperature`: samples at another temperature than the job's (`wrong_temperature`).
- `requantized`: serves the shipped GGUF requantized to Q2_K under the same model id
  (cheaper to run, worse to read).
- `overclaim`: bills on chain for the job's whole budget, whatever it sent.

And a host that games the market rather than the work (docs/trust.md, "Prices"):

- `absurd-price`: registers and quotes ABSURD_FACTOR times the price it was given, to set
  every client's reservation (clients leave such an outlier out).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable

from marketplace.protocol import GenerationRequest

log = logging.getLogger(__name__)

Send = Callable[[dict], Awaitable[None]]


class Honest:
    """Sends every token as the protocol says."""

    name = "honest"

    def stream_started(self) -> None:
        """A client passed the handshake and its stream begins."""

    async def token(self, ws, payload: dict, send: Send, *, sent: int) -> None:
        """Send one token message; `sent` is how many this connection has sent before."""
        await send(payload)

    def generation(self, request: GenerationRequest) -> GenerationRequest:
        """What the model is really asked to generate for a job's request."""
        return request

    def billed(self, tokens: int, max_tokens: int) -> int:
        """The tokens the result submitted on chain claims, for `tokens` generated."""
        return tokens

    def price(self, price_per_token_wei: int) -> int:
        """The price per token the host registers and quotes, for the one it was given."""
        return price_per_token_wei


class GzipBomb(Honest):
    name = "gzip-bomb"
    INFLATED_BYTES = 48 * 1024 * 1024

    def __init__(self) -> None:
        self._frames: dict[int, bytes] = {}

    def frame(self, index: int) -> bytes:
        """A token message whose text is INFLATED_BYTES of one letter, gzip-compressed a
        mebibyte at a time (the host never holds the inflated message either)."""
        if index not in self._frames:
            gzip = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            parts = [gzip.compress(b'{"type": "token", "index": %d, "content": "' % index)]
            chunk = b"A" * (1024 * 1024)
            for _ in range(self.INFLATED_BYTES // len(chunk)):
                parts.append(gzip.compress(chunk))
            parts.append(gzip.compress(b'", "timestamp": %f}' % time.time()))
            parts.append(gzip.flush())
            self._frames[index] = b"".join(parts)
        return self._frames[index]

    async def token(self, ws, payload: dict, send: Send, *, sent: int) -> None:
        if payload["index"] == 0:
            await ws.send_bytes(self.frame(0))
            return
        await send(payload)


class HugeToken(Honest):
    name = "huge-token"
    TOKEN_CHARS = 4 * 1024 * 1024

    async def token(self, ws, payload: dict, send: Send, *, sent: int) -> None:
        if payload["index"] == 0:
            payload = {**payload, "content": "A" * self.TOKEN_CHARS}
        await send(payload)


def _missing_field(payload: dict) -> str:
    return json.dumps({k: v for k, v in payload.items() if k != "content"})


def _wrong_types(payload: dict) -> str:
    return json.dumps({**payload, "index": str(payload["index"]), "content": 42})


def _gap(payload: dict) -> str:
    return json.dumps({**payload, "index": payload["index"] + 3})


def _unknown_type(payload: dict) -> str:
    return json.dumps({"type": "surprise", "data": {}})


def _not_json(payload: dict) -> str:
    return json.dumps(payload)[:-20]  # cut off inside the message


def _end_without_figures(payload: dict) -> str:
    return json.dumps({"type": "end", "data": {"resultHash": None}})


def _binary(payload: dict) -> bytes:
    return json.dumps(payload).encode()  # binary, but neither asked for nor compressed


MALFORMED: tuple[tuple[str, Callable[[dict], str | bytes]], ...] = (
    ("missing-field", _missing_field),
    ("wrong-types", _wrong_types),
    ("gap", _gap),
    ("unknown-type", _unknown_type),
    ("not-json", _not_json),
    ("end-without-figures", _end_without_figures),
    ("binary", _binary),
)


class Malformed(Honest):
    name = "malformed"
    AFTER = 2  # honest tokens first, so there is text the client must take back

    def __init__(self) -> None:
        self.streams = 0
        self.variant = MALFORMED[0]

    def stream_started(self) -> None:
        self.variant = MALFORMED[self.streams % len(MALFORMED)]
        self.streams += 1

    async def token(self, ws, payload: dict, send: Send, *, sent: int) -> None:
        if payload["index"] < self.AFTER:
            await send(payload)
            return
        name, make = self.variant
        log.info("malformed: sending %s in place of token %s", name, payload["index"])
        message = make(payload)
        if isinstance(message, bytes):
            await ws.send_bytes(message)
        else:
            await ws.send_str(message)


class Truncate(Honest):
    name = "truncate"
    PER_CONNECTION = 3

    async def token(self, ws, payload: dict, send: Send, *, sent: int) -> None:
        if sent >= self.PER_CONNECTION:
            raise ConnectionResetError("truncate: the connection ends here")
        await send(payload)


class Stall(Honest):
    name = "stall"
    AFTER = 3

    async def token(self, ws, payload: dict, send: Send, *, sent: int) -> None:
        if payload["index"] >= self.AFTER:
            await asyncio.Event().wait()  # holds the connection open and says nothing
        await send(payload)


class HalfSpeed(Honest):
    name = "half-speed"
    FACTOR = 2.0
    FIRST_TOKEN_DELAY_S = 0.3

    def __init__(self) -> None:
        self.sent_at = 0.0
        self.made_at: float | None = None

    def stream_started(self) -> None:
        self.sent_at, self.made_at = time.time(), None

    async def token(self, ws, payload: dict, send: Send, *, sent: int) -> None:
        made_at = float(payload["timestamp"])  # when the model made it (the host's clock)
        if self.made_at is None:
            wait = self.FIRST_TOKEN_DELAY_S
        else:
            wait = self.sent_at + self.FACTOR * max(made_at - self.made_at, 0.0) - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self.sent_at, self.made_at = time.time(), made_at
        await send(payload)


class Junk(Honest):
    name = "junk"
    PROMPT = "Write a short advertisement for a second-hand car."

    def generation(self, request: GenerationRequest) -> GenerationRequest:
        return request.model_copy(update={"prompt": self.PROMPT})


def wrong_temperature(temperature: float) -> float:
    """The temperature a `wrong-temperature` host samples at: its own default for a greedy
    job, half a degree hotter than asked otherwise."""
    return 0.7 if temperature <= 0.0 else temperature + 0.5


class WrongTemperature(Honest):
    name = "wrong-temperature"

    def generation(self, request: GenerationRequest) -> GenerationRequest:
        return request.model_copy(update={"temperature": wrong_temperature(
            request.temperature)})


class Requantized(Honest):
    """The weights are swapped where the backend is built (marketplace.host.main)."""

    name = "requantized"


class Overclaim(Honest):
    name = "overclaim"

    def billed(self, tokens: int, max_tokens: int) -> int:
        return max_tokens


class AbsurdPrice(Honest):
    name = "absurd-price"
    ABSURD_FACTOR = 10**18  # 1 gwei a token becomes 1 ETH a token

    def price(self, price_per_token_wei: int) -> int:
        return price_per_token_wei * self.ABSURD_FACTOR


BEHAVIOURS: dict[str, type[Honest]] = {
    cls.name: cls for cls in (Honest, GzipBomb, HugeToken, Malformed, Truncate, Stall,
                              HalfSpeed, Junk, WrongTemperature, Requantized, Overclaim,
                              AbsurdPrice)}


def behaviour_named(name: str) -> Honest:
    try:
        chosen = BEHAVIOURS[name]
    except KeyError:
        raise ValueError(f"no host behaviour {name!r}; there are: "
                         f"{', '.join(sorted(BEHAVIOURS))}") from None
    if chosen is not Honest:
        log.warning("this host is HOSTILE on purpose (--behaviour %s): for tests only", name)
    return chosen()
