"""Checking one host's tokens against the re-scored model.

Two kinds of test, with thresholds measured on honest hosts (docs/trust.md):

- at each position, hard checks that no floating-point difference explains: the token is
  one the model can generate there, its text is what the token decodes to, its reported
  log-probability is within `Thresholds.logprob_hard` of the recomputed one, and the token
  is within `Thresholds.gap_hard` of the choice the committed randomness makes from the
  verifier's logits (marketplace.sampling.check);
- over the whole result, statistics: the mean log-probability error, the share of
  positions whose token is not exactly the verifier's choice, and how many of them miss
  it clearly (by more than `Thresholds.gap_clear`). The host decodes one token
  at a time among other jobs, the verifier in one batch: llama.cpp's results differ by up
  to about a logit between the two, so single positions disagree now and then, but an
  honest result's averages stay low and a different model's or temperature's do not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from marketplace import sampling
from marketplace.weights import token_decoder

# Positions kept as evidence when a result fails: enough for an arbitrator to see why.
EVIDENCE_MAX = 8


@dataclass(frozen=True)
class Reported:
    """One token as the host sent it."""

    id: int | None
    logprob: float | None
    text: str


@dataclass(frozen=True)
class Thresholds:
    logprob_hard: float = 2.0  # nats, at any one position
    gap_hard: float = 3.0  # logits (x 1/T): how far from the choice a token may be
    logprob_mean: float = 0.14  # nats, averaged over the result
    # Tokens that are not exactly the verifier's choice: honest hosts have them at about
    # 3.5% of positions; a result fails with more than a binomial at `mismatch_rate`
    # would give once in 1/`clear_miss_alpha` results.
    mismatch_rate: float = 0.045
    # A clear miss: the token's score falls more than `gap_clear` logits short of the
    # verifier's choice. Honest hosts make them at about 0.6% of positions (floating-point
    # noise, measured: docs/trust.md); a result with more of them than an honest host
    # would make once in 1/`clear_miss_alpha` results (binomial at `clear_miss_rate`, and
    # never fewer than `clear_misses_min`) was not drawn by the committed rule.
    gap_clear: float = 0.2
    clear_miss_rate: float = 0.006
    clear_miss_alpha: float = 2e-4
    clear_misses_min: int = 4

    def mismatch_limit(self, positions: int) -> int:
        """The fewest tokens other than the verifier's choice that fail a result."""
        return max(self.clear_misses_min,
                   binomial_quantile(positions, self.mismatch_rate, self.clear_miss_alpha))

    # Where the verifier's choice leads the runner-up by a margin m (logits), an honest
    # host's token differs from it with at most this probability: floating-point noise
    # flips near-ties often and clear leads all but never. Measured on honest hosts here
    # (docs/trust.md), then doubled or more. Each entry: (margin below which, probability).
    flip_envelope: tuple[tuple[float, float], ...] = (
        (0.1, 0.5), (0.2, 0.25), (0.3, 0.1), (0.75, 0.02), (1.5, 0.006), (float("inf"), 0.002))
    # A result fails when its tokens differ from the verifier's choices more often than
    # the envelope lets an honest host do with this probability (a Poisson bound).
    flip_alpha: float = 2e-4

    def flip_chance(self, margin: float) -> float:
        for below, chance in self.flip_envelope:
            if margin < below:
                return chance
        return self.flip_envelope[-1][1]

    def clear_miss_limit(self, positions: int) -> int:
        """The fewest clear misses that fail a result of `positions` tokens."""
        return max(self.clear_misses_min,
                   binomial_quantile(positions, self.clear_miss_rate, self.clear_miss_alpha))
    min_positions: int = 8  # the statistics judge results at least this long

    def tolerance(self) -> sampling.Tolerance:
        return sampling.Tolerance(logit=self.gap_hard, logprob=self.logprob_hard, edge=0.25,
                                  edge_logit=1.0)


@dataclass
class Finding:
    passed: bool
    positions: int = 0  # positions checked
    failures: int = 0  # positions failing a hard check
    mismatches: int = 0  # positions whose token is not exactly the verifier's choice
    clear_misses: int = 0  # of them, those missing by more than Thresholds.gap_clear
    expected_flips: float = 0.0  # how many of them an honest host would make, at most
    logprob_error_sum: float = 0.0
    max_logprob_error: float = 0.0
    reason: str = ""
    evidence: list[dict] = field(default_factory=list)

    @property
    def mean_logprob_error(self) -> float:
        return self.logprob_error_sum / self.positions if self.positions else 0.0

    @property
    def mismatch_rate(self) -> float:
        return self.mismatches / self.positions if self.positions else 0.0

    def fail(self, position: int, reason: str, **details) -> None:
        self.passed = False
        self.failures += 1
        if not self.reason:
            self.reason = f"position {position}: {reason}"
        if len(self.evidence) < EVIDENCE_MAX:
            self.evidence.append({"position": position, "reason": reason, **details})


def score(*, logits: Iterator[np.ndarray], reported: list[Reported], temperature: float,
          key: int, pieces: list[bytes], eog: set[int], complete: bool,
          thresholds: Thresholds) -> Finding:
    """`logits` yields the distributions for positions 0 .. len(reported) (the last one is
    what follows the final token). `complete`: the host said it finished before its
    budget (not cancelled, not cut off), so the next token must be an end of generation."""
    finding = Finding(passed=True)
    tolerance = thresholds.tolerance()
    decoder = token_decoder()
    for position, (row, token) in enumerate(zip(logits, _with_end(reported), strict=False)):
        if token is None:  # the position after the last token
            if complete and not _ends(row, temperature, key, position, eog, tolerance):
                finding.fail(position, "the model goes on here: the result was cut short",
                             expected=sampling.choose(row, temperature, key, position))
            break
        finding.positions += 1
        if token.id is None or token.logprob is None:
            finding.fail(position, "no token id or log-probability reported")
            continue
        if not 0 <= token.id < len(pieces) or token.id in eog:
            finding.fail(position, "not a token the model can generate here", token=token.id)
            continue
        checked = sampling.check(row, temperature, key, position, token.id, token.logprob,
                                 tolerance)
        error = min(checked.logprob_error, thresholds.logprob_hard * 10)
        finding.logprob_error_sum += error
        finding.max_logprob_error = max(finding.max_logprob_error, error)
        finding.expected_flips += thresholds.flip_chance(checked.margin)
        if token.id != checked.expected:
            finding.mismatches += 1
            if checked.gap > thresholds.gap_clear:
                finding.clear_misses += 1
        if not checked.ok:
            finding.fail(position, checked.reason, token=token.id, expected=checked.expected,
                         logprob=token.logprob,
                         logprob_error=round(min(checked.logprob_error, 1e9), 6))
        text = decoder.decode(pieces[token.id])
        if text != token.text:
            finding.fail(position, "the text is not what the token decodes to",
                         token=token.id)
    if finding.clear_misses >= thresholds.clear_miss_limit(finding.positions):
        finding.fail(-1, f"{finding.clear_misses} tokens fall clearly short of the ones the "
                     "committed randomness selects")
    if finding.mismatches and poisson_tail(finding.mismatches, finding.expected_flips) < (
            thresholds.flip_alpha):
        finding.fail(-1, f"{finding.mismatches} tokens differ from the committed choice where "
                     f"an honest host differs at {finding.expected_flips:.2f} at most: not the "
                     "committed randomness at the job's temperature")
    if finding.positions >= thresholds.min_positions:
        if finding.mean_logprob_error > thresholds.logprob_mean:
            finding.fail(-1, f"mean log-probability error {finding.mean_logprob_error:.3f} "
                         f"over {finding.positions} tokens")
        if finding.mismatches >= thresholds.mismatch_limit(finding.positions):
            finding.fail(-1, f"{finding.mismatches} of {finding.positions} tokens are not "
                         "the ones the committed randomness selects")
    return finding


def poisson_tail(k: int, mean: float) -> float:
    """P(X >= k) for X ~ Poisson(mean), summed upward from k (no cancellation)."""
    if k <= 0:
        return 1.0
    if mean <= 0.0:
        return 0.0
    term = math.exp(-mean + k * math.log(mean) - math.lgamma(k + 1))
    total, i = 0.0, k
    while term > total * 1e-17 and i < k + 10_000:
        total += term
        i += 1
        term *= mean / i
    return min(1.0, total)


def binomial_quantile(n: int, p: float, alpha: float) -> int:
    """The smallest k with P(X >= k) <= alpha for X ~ Binomial(n, p)."""
    k, below, pmf = 0, 0.0, (1.0 - p) ** n
    while 1.0 - below > alpha and k <= n:
        below += pmf
        k += 1
        pmf *= (n - k + 1) / k * p / (1.0 - p)
    return k


def _with_end(reported: list[Reported]) -> Iterable[Reported | None]:
    yield from reported
    yield None


def _ends(row: np.ndarray, temperature: float, key: int, position: int, eog: set[int],
          tolerance: sampling.Tolerance) -> bool:
    if sampling.choose(row, temperature, key, position) in eog:
        return True
    # Within the tolerance of an end: the host's logits may have chosen it.
    return any(sampling.check(row, temperature, key, position, t,
                              sampling.log_softmax_at(row, t), tolerance).ok for t in eog)

