"""A follow-up's prompt: the conversation so far, bounded by the protocol's limit."""

import pytest

from content.prompts import build_prompt
from marketplace.protocol import MAX_PROMPT_CHARS
from writer.conversation import (
    ASK,
    PRESETS,
    ConversationTooLong,
    Turn,
    clean_spec,
    followup_prompt,
    presets_for,
)

REQUEST = build_prompt("email", "the office move", style="casual", length="short").text


def test_a_first_follow_up_holds_the_request_the_text_and_the_change_in_order():
    prompt = followup_prompt([Turn(REQUEST, "Hi all, we move on Monday.")], "Shorter.")
    assert prompt == (f"{REQUEST}\n\nYour answer:\nHi all, we move on Monday.\n\n"
                      f"Change: Shorter.\n{ASK}")


def test_later_follow_ups_carry_every_earlier_change_and_answer():
    turns = [Turn(REQUEST, "v1 text"), Turn("More formal.", "v2 text"),
             Turn("Add the date.", "v3 text")]
    prompt = followup_prompt(turns, "Friendlier.")
    order = [REQUEST, "v1 text", "Change: More formal.", "v2 text", "Change: Add the date.",
             "v3 text", "Change: Friendlier."]
    at = [prompt.index(part) for part in order]
    assert at == sorted(at)
    assert prompt.endswith(ASK)


def test_the_oldest_turns_go_first_but_never_the_request_nor_the_latest_text():
    turns = [Turn(REQUEST, "FIRST " * 100)]
    turns += [Turn(f"change {n}", f"TEXT{n} " * 100) for n in range(1, 6)]
    whole = followup_prompt(turns, "Shorter.")
    assert len(whole) > 3000
    prompt = followup_prompt(turns, "Shorter.", limit=2500)
    assert len(prompt) <= 2500
    assert prompt.startswith(REQUEST + "\n\n")  # the request stays, alone
    assert "FIRST" not in prompt  # the first version's text went first
    assert ("TEXT5 " * 100).strip() in prompt and "Change: change 5" in prompt  # the latest stays
    assert "TEXT1" not in prompt and "change 1\n" not in prompt  # the oldest change went
    kept = [n for n in range(1, 6) if f"TEXT{n}" in prompt]
    assert kept == list(range(kept[0], 6))  # what is kept is the newest, in a row
    assert prompt.endswith(f"Change: Shorter.\n{ASK}")


def test_a_change_of_the_first_version_keeps_its_text():
    prompt = followup_prompt([Turn(REQUEST, "ONLY " * 300)], "Shorter.", limit=2000)
    assert ("ONLY " * 300).strip() in prompt


def test_a_request_and_latest_text_over_the_limit_are_refused_with_their_size():
    turns = [Turn(REQUEST, "a"), Turn("longer", "x" * MAX_PROMPT_CHARS)]
    with pytest.raises(ConversationTooLong) as info:
        followup_prompt(turns, "Shorter.")
    assert info.value.limit == MAX_PROMPT_CHARS and info.value.chars > MAX_PROMPT_CHARS


def test_every_type_offers_shorter_and_more_formal_and_changes_of_its_own():
    for content_type in ("blog", "email", "code", "summary"):
        labels = [label for _, label in presets_for(content_type)]
        assert labels[:2] == ["Shorter", "More formal"] and len(labels) == 4
    assert all(instruction.endswith(".") for _, instruction in PRESETS.values())


def test_a_follow_ups_answer_loses_a_line_that_repeats_its_instruction():
    spec = clean_spec(content_type="email", prompt="the office move", style="casual",
                      length="short", followup=True)
    text = "Subject: Moving\n\nWrite the whole new version with this change.\nHi all."
    assert spec.clean(text) == "Subject: Moving\n\nHi all."
