"""Sampling that anyone holding the model can check afterwards.

The randomness of a generation is fixed before it starts and bound to the job: the client
sends a secret in StreamInit, and `job_key(secret, chain_id, job_id)` turns it into a
64-bit key. Every (position, token) pair then has its own uniform number from a
counter-based mixer (`uniforms`), so the token at a position depends only on the model's
logits there and on the key, never on what else the host was doing.

The rule, at one position, from the model's logits z (one float per vocabulary entry):

1. temperature 0: the token with the highest logit (the lowest id among equals);
2. otherwise the candidates are the TOP_K tokens with the highest logits, cut (on the
   softmax of z at temperature 1) to those with at least MIN_P times the best one's
   probability and to the shortest prefix whose probabilities reach TOP_P;
3. among the candidates the token with the highest z/T + g is chosen, where
   g = -log(-log(u)) is the Gumbel noise of its uniform number u (the Gumbel-max trick:
   this samples exactly from softmax(z/T) over the candidates).

Each token's reported log-probability is log-softmax(z) at temperature 1 over the whole
vocabulary.

Why the Gumbel form and not one number per position through the cumulative distribution:
a verifier recomputes the logits with another batch layout, so they differ from the host's
by floating-point noise. With the cumulative form, two candidates whose logits are within
that noise of each other swap places in the order and move every interval after them; with
the Gumbel form a choice can only flip when the two best scores are within the noise of
each other, and `check` allows exactly that much (measured: docs/trust.md).

Shared by the host (which samples) and the verifier (which checks); it imports neither.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import numpy as np

TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def job_key(secret: bytes, chain_id: int, job_id: int) -> int:
    """The job's 64-bit sampling key: the client's secret bound to the chain and the job."""
    message = f"inkmarket sampling v1|{chain_id}|{job_id}".encode()
    return int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest()[:8], "big")


def uniforms(key: int, position: int, tokens: np.ndarray) -> np.ndarray:
    """The uniform number in (0, 1) of each token at `position` (splitmix64 of the key
    and the counter position * 2**32 + token id, top 53 bits)."""
    counter = np.uint64(position) * np.uint64(1 << 32) + tokens.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) + counter * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def log_softmax_at(logits: np.ndarray, token: int) -> float:
    """log p(token) at temperature 1, over the whole vocabulary."""
    top = float(logits.max())
    total = float(np.exp(logits - top).sum(dtype=np.float64))
    return float(logits[token]) - top - float(np.log(total))


@dataclass(frozen=True)
class Candidates:
    ids: np.ndarray  # best logit first
    logits: np.ndarray  # float64, same order
    p: np.ndarray  # softmax at temperature 1 over the first TOP_K
    kept: int  # how many of them pass MIN_P and TOP_P


def candidates(logits: np.ndarray, *, extra: int = 0) -> Candidates:
    """The TOP_K (+ `extra`) best tokens, best first, and how many of them the cut keeps."""
    k = min(TOP_K + extra, logits.shape[0])
    ids = np.argpartition(-logits, k - 1)[:k]
    z = logits[ids].astype(np.float64)
    order = np.lexsort((ids, -z))
    ids, z = ids[order], z[order]
    p = np.exp(z - z[0])
    p /= p[:TOP_K].sum()
    by_min_p = int(np.count_nonzero(p[:TOP_K] >= MIN_P * p[0]))
    by_top_p = int(np.searchsorted(np.cumsum(p[:TOP_K]), TOP_P) + 1)
    return Candidates(ids=ids, logits=z, p=p, kept=max(1, min(by_min_p, by_top_p, TOP_K)))


def choose(logits: np.ndarray, temperature: float, key: int, position: int) -> int:
    """The token the rule selects at `position`."""
    if temperature <= 0.0:
        return int(np.argmax(logits))
    return _select(candidates(logits), temperature, key, position)


def _select(found: Candidates, temperature: float, key: int, position: int) -> int:
    ids = found.ids[:found.kept]
    scores = found.logits[:found.kept] / temperature + _gumbel(key, position, ids)
    return int(ids[int(np.argmax(scores))])


def _gumbel(key: int, position: int, ids: np.ndarray) -> np.ndarray:
    return -np.log(-np.log(uniforms(key, position, ids)))


@dataclass(frozen=True)
class Tolerance:
    """How far a verifier's recomputation may be from the host's and still agree."""

    logit: float = 0.05  # a choice may flip when the best scores are this close (x 1/T)
    logprob: float = 0.05  # nats between the reported and the recomputed log-probability
    # Candidates at the edge of the cut: a token within this factor of a threshold is
    # surely in the host's set only past it, and competes with the reported token only then.
    edge: float = 0.02
    # A reported token may have been in the host's set if its logit relative to the best
    # is within this much (logits) of passing MIN_P, and it is among the TOP_K + 2 best:
    # the host's logits differ from the verifier's by up to about a logit (docs/trust.md).
    edge_logit: float = 1.0


@dataclass(frozen=True)
class PositionCheck:
    ok: bool
    reason: str  # "" when ok
    logprob_error: float
    expected: int  # the token the verifier's own logits select
    # How far, in logits, the token's score falls short of the best competitor's (0 when
    # it is the verifier's choice too, inf when it could not have been chosen at all).
    gap: float = 0.0
    # How far, in logits, the verifier's choice is ahead of the runner-up: where it is
    # small, floating-point noise in the host's logits may flip the choice; where it is
    # large, an honest host all but never differs (docs/trust.md).
    margin: float = float("inf")


def check(logits: np.ndarray, temperature: float, key: int, position: int, token: int,
          logprob: float, tolerance: Tolerance) -> PositionCheck:
    """Whether `token`, reported with `logprob`, is what the rule selects from the
    verifier's `logits` at `position`, allowing for floating-point differences."""
    n_vocab = logits.shape[0]
    if not 0 <= token < n_vocab:
        return PositionCheck(False, "token id outside the vocabulary", float("inf"), -1,
                             float("inf"))
    recomputed = log_softmax_at(logits, token)
    error = abs(recomputed - logprob) if np.isfinite(logprob) else float("inf")
    if temperature <= 0.0:
        expected = int(np.argmax(logits))
        gap = max(0.0, float(logits[expected]) - float(logits[token]))
        reason = "" if gap <= tolerance.logit else "not the most likely token"
        best_two = np.partition(logits, -2)[-2:]
        margin = float(best_two[1]) - float(best_two[0])
    else:
        found = candidates(logits, extra=8)
        expected = _select(found, temperature, key, position)
        gap, reason, margin = _sampled_gap(found, temperature, key, position, token,
                                           tolerance)
    if error > tolerance.logprob:
        reason = "log-probability differs"
    return PositionCheck(not reason, reason, error, expected, gap, margin)


def _sampled_gap(found: Candidates, temperature: float, key: int, position: int,
                 token: int, tolerance: Tolerance) -> tuple[float, str, float]:
    """(gap, reason, margin): see PositionCheck."""
    p = found.p
    scores = found.logits / temperature + _gumbel(key, position, found.ids)
    kept = [i for i in range(min(TOP_K, len(p))) if _surely_kept(p, i, tolerance.edge)]
    ranked = sorted((float(scores[i]) for i in kept), reverse=True)
    margin = (ranked[0] - ranked[1]) * temperature if len(ranked) > 1 else float("inf")
    where = np.flatnonzero(found.ids == token)
    if where.size == 0 or not _may_be_kept(p, int(where[0]), tolerance.edge_logit):
        return float("inf"), "not a candidate token", margin
    at = int(where[0])
    # Every token surely in the host's set competes; a token at the edge only if reported.
    best_other = max((scores[i] for i in kept if i != at), default=-np.inf)
    gap = max(0.0, float(best_other - scores[at]) * temperature)
    if gap <= tolerance.logit:
        return gap, "", margin
    return gap, "not the token the committed randomness selects", margin


def _may_be_kept(p: np.ndarray, i: int, edge_logit: float) -> bool:
    """Whether the host, whose logits may differ from ours by `edge_logit`, could have
    kept the i-th best token. Top-p is not applied here: with noisy logits its cut moves
    by whole tokens, and MIN_P and TOP_K bound the set already."""
    if i >= TOP_K + 2:
        return False
    return i == 0 or bool(p[i] >= MIN_P * p[0] * np.exp(-edge_logit))


def _surely_kept(p: np.ndarray, i: int, edge: float) -> bool:
    if i >= TOP_K - 1 or p[i] < MIN_P * p[0] * (1 + edge):
        return i == 0
    return i == 0 or float(p[:i].sum()) < TOP_P * (1 - edge)
