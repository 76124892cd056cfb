"""The statistics over a whole result (marketplace.verifier.scoring), on made-up logits
where the answer is known: which tokens an honest host could have reported, and which
only a host sampling by another rule would."""

from __future__ import annotations

import math

import numpy as np
import pytest

from marketplace import sampling
from marketplace.verifier.scoring import Reported, Thresholds, poisson_tail, score

VOCAB = 64
PIECES = [bytes([65 + i % 26]) for i in range(VOCAB)]


def rows(margins: list[float]) -> list[np.ndarray]:
    """One row per position: token 1 leads token 2 by the margin, the rest far behind."""
    made = []
    for margin in margins:
        row = np.full(VOCAB, -10.0, dtype=np.float32)
        row[1], row[2] = 5.0, 5.0 - margin
        made.append(row)
    made.append(np.full(VOCAB, 0.0, dtype=np.float32))  # after the last token
    return made


def report(logits: list[np.ndarray], tokens: list[int]) -> list[Reported]:
    return [Reported(t, sampling.log_softmax_at(row, t), PIECES[t].decode())
            for row, t in zip(logits, tokens, strict=False)]


def judge(margins: list[float], tokens: list[int]):
    logits = rows(margins)
    return score(logits=iter(logits), reported=report(logits, tokens), temperature=0.0,
                 key=1, pieces=PIECES, eog=set(), complete=False, thresholds=Thresholds())


def test_poisson_tail_is_the_upper_tail():
    assert poisson_tail(0, 3.0) == 1.0
    assert poisson_tail(1, 0.5) == pytest.approx(1 - math.exp(-0.5))
    assert poisson_tail(3, 2.0) == pytest.approx(1 - 5 * math.exp(-2))
    assert 0 < poisson_tail(40, 0.1) < 1e-60


def test_flips_at_near_ties_are_what_honest_noise_does():
    """Ten near-ties, half of them flipped: the coin an honest host's rounding tosses."""
    margins = [0.05] * 10 + [2.0] * 54
    tokens = [2] * 5 + [1] * 59
    finding = judge(margins, tokens)
    assert finding.passed, finding.reason
    assert finding.mismatches == 5 and finding.expected_flips > 5


def test_a_few_flips_where_the_model_was_sure_fail_though_each_is_within_the_gap():
    """Four tokens that trail the committed choice by 2 logits, among 64 clear leads: each
    passes the per-position check (under 3 logits) and the count of clear misses (under
    5), but an honest host flips a lead of 2 logits once in hundreds of positions."""
    margins = [2.0] * 64
    tokens = [2] * 4 + [1] * 60
    finding = judge(margins, tokens)
    assert finding.clear_misses == 4 < Thresholds().clear_miss_limit(64)
    assert not finding.passed
    assert "an honest host differs at" in finding.reason


def test_one_flip_where_the_model_was_sure_is_forgiven():
    finding = judge([2.0] * 64, [2] + [1] * 63)
    assert finding.passed, finding.reason
