"""Result verification: a quality score from 0 to 1 built from checks on the text itself.

Three checks are gates (the text must be what the host committed to on chain, must not be
empty, and must fit the token budget); the commitment is keyed (marketplace.e2e.
result_commitment: HMAC under a key only the client and the job's host know), so the
public, who sees the hash on chain, cannot test a guessed text against it. The rest grade
it: degenerate repetition, the requested format, and a length that fits the request. At
ACCEPT_THRESHOLD or more the client accepts the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from marketplace.e2e import commitment_matches, result_key

ACCEPT_THRESHOLD = 0.7
_WORD = re.compile(r"\w+", re.UNICODE)
_FENCE = re.compile(r"```")
_CODE_LINE = re.compile(r"^\s*(def |class |import |from |function |const |let |var |#include|"
                        r"public |private |return\b|if\s*\(|for\s*\(|while\s*\(|\}|\{)", re.M)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S", re.M)


@dataclass(frozen=True)
class Verdict:
    score: float
    checks: dict[str, float] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.score >= ACCEPT_THRESHOLD


def job_result_key(seed: str, chain_id: int, chain_job_id: int) -> bytes:
    """The key a job's result is committed under, from its request's `seed` (hex)."""
    return result_key(bytes.fromhex(seed), chain_id, chain_job_id)


def repetition_score(text: str) -> float:
    """1.0 for varied text, falling to 0 as word trigrams repeat (a model stuck in a loop)."""
    words = [w.lower() for w in _WORD.findall(text)]
    if len(words) < 8:
        return 1.0
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    distinct = len(set(trigrams)) / len(trigrams)
    # Ordinary prose keeps well above 0.7 distinct trigrams; loops fall far below 0.3.
    return max(0.0, min(1.0, (distinct - 0.3) / 0.4))


def format_score(text: str, content_type: str | None) -> float:
    if content_type == "code":
        return 1.0 if _FENCE.search(text) or len(_CODE_LINE.findall(text)) >= 2 else 0.3
    if content_type == "summary":
        words = len(_WORD.findall(text))
        return 1.0 if _BULLET.search(text) or words <= 250 else 0.6
    if content_type == "blog":
        paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
        return 1.0 if len(paragraphs) >= 2 else 0.6
    if content_type == "email":
        return 1.0 if len(_WORD.findall(text)) >= 10 else 0.5
    return 1.0


def length_score(tokens: int, max_tokens: int) -> float:
    """Answers shorter than a tenth of the budget (and under 16 tokens) are suspect."""
    if tokens <= 0:
        return 0.0
    floor = min(16, max(1, max_tokens // 10))
    return 1.0 if tokens >= floor else tokens / floor


def verify_result(
    *, text: str, result_hash: str | None, key: bytes, tokens: int, max_tokens: int,
    content_type: str | None = None,
) -> Verdict:
    """`key`: the job's result key (job_result_key)."""
    checks = {
        "hash": 1.0 if commitment_matches(text, key, result_hash) else 0.0,
        "non_empty": 1.0 if text.strip() else 0.0,
        "within_budget": 1.0 if 0 < tokens <= max_tokens else 0.0,
        "repetition": repetition_score(text),
        "format": format_score(text, content_type),
        "length": length_score(tokens, max_tokens),
    }
    graded = 0.5 * checks["repetition"] + 0.25 * checks["format"] + 0.25 * checks["length"]
    score = checks["hash"] * checks["non_empty"] * checks["within_budget"] * graded
    return Verdict(score=round(score, 4), checks=checks)
