"""Where a /v1 request's time goes: the `Server-Timing` header of every /v1 answer, and
the same figures as the /metrics histogram `inkmarket_gateway_phase_seconds`.

    Server-Timing: gw;dur=1.23, money;dur=0.45, upstream;dur=12.30, total;dur=13.98

in milliseconds, two decimals (W3C Server Timing). The phases:
  * total: the gateway's whole handling, from its middleware taking the request to the
    answer leaving it (for a stream: to its headers; see below);
  * money: reserving the worst case and settling (or releasing) it, summed
    (gateway.books open and close);
  * upstream: the upstream server's or the marketplace's time, from sending the job to
    its whole answer;
  * gw: the gateway's own, total − money − upstream (the key, the rate limit, the body,
    validation, the cache, the request's records, JSON).
A phase the request did not reach is left out: a 401 or a 429 has gw and total only, a
cached answer no money and no upstream, a 402 money (the refused reservation) but no
upstream.

A stream's headers go before its first byte, so its header holds what is known then: the
reservation in money, and the upstream with `desc="so far"`, the time since it was sent
(any phase still running when an answer leaves is shown so; a 202's upstream too). The
histogram gets a stream's figures at its last byte: the whole upstream, the settlement
in money, and `upstream_first`, the upstream's time to the first piece of text.

The recorder is one object on the request (request.timing), handed to the run
(gateway.inference.inference_run, `timing`), which outlives the HTTP request in its own
task: a few perf_counter_ns readings and additions a request, no I/O. The histogram
counts in this process and goes to Redis with the other shared counts
(observability.metrics), at most once a second.
"""

from __future__ import annotations

import time

from observability.metrics import observe_gateway_phases

_now = time.perf_counter_ns
HEADER = "Server-Timing"
# The phases the run reports (gw and total are the middleware's).
MONEY, UPSTREAM = "money", "upstream"


class Timing:
    """The phases of one /v1 request, in nanoseconds."""

    __slots__ = ("started", "spent", "running", "first_ns", "observed")

    def __init__(self):
        self.started = _now()
        self.spent: dict[str, int] = {}
        self.running: dict[str, int] = {}  # phase -> when it began
        self.first_ns: int | None = None  # the upstream's time to its first piece
        self.observed = False

    def begin(self, phase: str) -> int:
        began = self.running[phase] = _now()
        return began

    def end(self, phase: str, began: int) -> None:
        self.running.pop(phase, None)
        self.spent[phase] = self.spent.get(phase, 0) + _now() - began

    def first_piece(self) -> None:
        """The first piece of a streamed answer has arrived (from the upstream or a host)."""
        began = self.running.get(UPSTREAM)
        if began is not None and self.first_ns is None:
            self.first_ns = _now() - began

    def phases(self, now: int) -> tuple[int, dict[str, int]]:
        """The total, and the time of each phase reached (a running one: so far)."""
        spent = self.spent
        if self.running:
            spent = dict(spent)
            for phase, began in self.running.items():
                spent[phase] = spent.get(phase, 0) + now - began
        return now - self.started, spent

    def header(self) -> str:
        total, spent = self.phases(_now())
        parts = [f"gw;dur={max(total - sum(spent.values()), 0) / 1e6:.2f}"]
        for phase in (MONEY, UPSTREAM):
            if phase in spent:
                desc = 'desc="so far";' if phase in self.running else ""
                parts.append(f"{phase};{desc}dur={spent[phase] / 1e6:.2f}")
        parts.append(f"total;dur={total / 1e6:.2f}")
        return ", ".join(parts)

    def observe(self) -> None:
        """Add this request's figures to the histogram (once)."""
        if self.observed:
            return
        self.observed = True
        total, spent = self.phases(_now())
        figures = {"gw": max(total - sum(spent.values()), 0), "total": total, **spent}
        if self.first_ns is not None:
            figures["upstream_first"] = self.first_ns
        observe_gateway_phases(figures)


async def timed(timing: Timing | None, phase: str, awaitable):
    """Await `awaitable`, its time added to `phase` of `timing` (None: just await it)."""
    if timing is None:
        return await awaitable
    began = timing.begin(phase)
    try:
        return await awaitable
    finally:
        timing.end(phase, began)


def timing_answer(timing: Timing, response) -> None:
    """Put the header on `response`; observe now, or at a stream's last byte."""
    response[HEADER] = timing.header()
    if not getattr(response, "streaming", False):
        timing.observe()
        return
    content = response.streaming_content
    if response.is_async:

        async def observed():
            try:
                async for part in content:
                    yield part
            finally:
                timing.observe()
    else:

        def observed():
            try:
                yield from content
            finally:
                timing.observe()

    response.streaming_content = observed()
