import hashlib

from marketplace.client.verify import (
    ACCEPT_THRESHOLD,
    job_result_key,
    repetition_score,
    verify_result,
)
from marketplace.e2e import result_commitment

KEY = job_result_key("ab" * 32, 31337, 7)


def committed(text: str) -> str:
    return result_commitment(text, KEY)


def verify(**kwargs):
    return verify_result(key=KEY, **kwargs)

PROSE = (
    "Remote work changed how teams plan their days. Meetings moved online, "
    "and written updates replaced many hallway conversations.\n\n"
    "The best teams wrote things down, agreed on hours to overlap, and kept "
    "their tools simple so that nobody was left behind."
)


def test_a_good_result_with_the_committed_hash_is_accepted():
    verdict = verify(text=PROSE, result_hash=committed(PROSE), tokens=60, max_tokens=100,
                            content_type="blog")
    assert verdict.score == 1.0
    assert verdict.accepted


def test_a_result_that_differs_from_its_committed_hash_scores_zero():
    verdict = verify(text=PROSE, result_hash=committed(PROSE + "!"), tokens=60,
                            max_tokens=100)
    assert verdict.score == 0.0
    assert verdict.checks["hash"] == 0.0


def test_the_hash_may_carry_a_0x_prefix():
    verdict = verify(text=PROSE, result_hash="0x" + committed(PROSE), tokens=60,
                            max_tokens=100)
    assert verdict.checks["hash"] == 1.0


def test_an_empty_result_is_rejected_even_with_a_matching_hash():
    verdict = verify(text="   ", result_hash=committed("   "), tokens=1, max_tokens=100)
    assert verdict.score == 0.0
    assert not verdict.accepted


def test_a_model_stuck_in_a_loop_scores_below_the_threshold():
    junk = "the cat sat on the mat " * 40
    verdict = verify(text=junk, result_hash=committed(junk), tokens=240, max_tokens=256)
    assert verdict.checks["repetition"] == 0.0
    assert verdict.score < ACCEPT_THRESHOLD


def test_varied_prose_does_not_count_as_repetition():
    assert repetition_score(PROSE) == 1.0


def test_code_without_any_code_scores_lower_on_format():
    verdict = verify(text=PROSE, result_hash=committed(PROSE), tokens=60, max_tokens=100,
                            content_type="code")
    assert verdict.checks["format"] < 1.0
    code = "```python\ndef add(a, b):\n    return a + b\n```\nAdds two numbers."
    verdict = verify(text=code, result_hash=committed(code), tokens=30, max_tokens=100,
                            content_type="code")
    assert verdict.checks["format"] == 1.0


def test_more_tokens_than_allowed_fails_the_length_check():
    verdict = verify(text=PROSE, result_hash=committed(PROSE), tokens=101,
                            max_tokens=100)
    assert verdict.checks["within_budget"] == 0.0
    assert verdict.score == 0.0


def test_a_very_short_answer_to_a_long_request_is_graded_down():
    verdict = verify(text="Yes.", result_hash=committed("Yes."), tokens=2,
                            max_tokens=400)
    assert verdict.checks["length"] < 0.2


def test_a_plain_sha256_of_the_text_is_not_its_commitment():
    plain = hashlib.sha256(PROSE.encode()).hexdigest()
    verdict = verify_result(key=KEY, text=PROSE, result_hash=plain, tokens=60, max_tokens=100)
    assert verdict.checks["hash"] == 0.0


def test_a_commitment_under_another_jobs_key_does_not_match():
    other = result_commitment(PROSE, job_result_key("ab" * 32, 31337, 8))
    verdict = verify_result(key=KEY, text=PROSE, result_hash=other, tokens=60, max_tokens=100)
    assert verdict.checks["hash"] == 0.0
