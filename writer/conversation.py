"""A document's conversation: the prompt of a follow-up ("Shorter", "More formal", or a
change in the person's own words), built from the versions before it.

A document is its first generation and the follow-ups asked of it, each a generation of
its own (writer.models.Generation: `root`, `parent`, `instruction`). A follow-up's prompt
holds the conversation from the original request to the version it changes, then the
change asked:

    <the original request, as sent>

    Your answer:
    <the first version's text>

    Change: <an earlier follow-up's instruction>

    Your answer:
    <its text>
    ...
    Change: <this follow-up's instruction>
    Write the whole new version with this change, and nothing else.

Every prompt carries the whole context, so any host can answer it: the one that answered
the last turn (the session's host, marketplace.client.runner) finds the prefix in its KV
cache; another one reads it all again. The prompt stays under the protocol's limit
(protocol.MAX_PROMPT_CHARS) by leaving out the oldest turns: first the first version's
text, then the earliest follow-ups with their answers, never the original request nor the
version being changed. A text is the version as the person left it (their edit, if any).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from content.prompts import PromptSpec, build_prompt
from marketplace.protocol import MAX_PROMPT_CHARS

MAX_INSTRUCTION_CHARS = 500
ASK = "Write the whole new version with this change, and nothing else."
ANSWER = "Your answer:"

# The follow-ups offered as buttons: every type gets the first two, then its own.
PRESETS: dict[str, tuple[str, str]] = {
    "shorter": ("Shorter", "Make it shorter: about half as long, keeping the main points."),
    "formal": ("More formal", "Make it more formal and polite."),
    "examples": ("Add examples", "Add a concrete example to each main point."),
    "simpler": ("Simpler words", "Use simpler words and shorter sentences."),
    "friendlier": ("Friendlier", "Make it warmer and friendlier."),
    "action": ("Clear next step", "End with one clear request for what the reader "
                                  "should do next."),
    "comments": ("More comments", "Explain each step of the code in a comment."),
    "tests": ("Add tests", "Add unit tests for the code."),
    "fewer": ("Fewer points", "Keep only the three most important points."),
}
PRESETS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "blog": ("shorter", "formal", "examples", "simpler"),
    "email": ("shorter", "formal", "friendlier", "action"),
    "code": ("shorter", "formal", "comments", "tests"),
    "summary": ("shorter", "formal", "fewer", "simpler"),
}


def presets_for(content_type: str) -> list[tuple[str, str]]:
    """The (key, label) of the buttons a document of this type gets."""
    return [(key, PRESETS[key][0]) for key in PRESETS_BY_TYPE.get(content_type, ())]


@dataclass(frozen=True)
class Turn:
    """One version of a document: what was asked (the original request, or a follow-up's
    instruction) and the text it got."""

    asked: str
    text: str


class ConversationTooLong(Exception):
    """Even with every turn that may be left out gone, the prompt is over the limit: the
    original request and the version being changed are too long together."""

    def __init__(self, chars: int, limit: int):
        super().__init__(f"the conversation needs {chars} characters; at most {limit}")
        self.chars, self.limit = chars, limit


def _turn_text(turn: Turn, *, first: bool) -> str:
    asked = turn.asked if first else f"Change: {turn.asked}"
    return f"{asked}\n\n{ANSWER}\n{turn.text.strip()}"


def followup_prompt(turns: list[Turn], instruction: str, *,
                    limit: int = MAX_PROMPT_CHARS) -> str:
    """The prompt of a follow-up of the last of `turns` (the first is the original
    request and its text); the oldest turns are left out until it fits in `limit`
    characters. ConversationTooLong when even the shortest form is over it."""
    if not turns:
        raise ValueError("a follow-up needs the version it changes")
    original, later = turns[0], list(turns[1:])
    ask = f"Change: {instruction.strip()}\n{ASK}"
    first_text = True  # whether the first version's text still goes along
    while True:
        if later:
            parts = [_turn_text(original, first=True) if first_text else original.asked]
            parts += [_turn_text(turn, first=False) for turn in later]
        else:  # a change of the first version: its text is the latest, always kept
            parts = [_turn_text(original, first=True)]
        prompt = "\n\n".join([*parts, ask])
        if len(prompt) <= limit:
            return prompt
        if later and first_text:
            first_text = False
        elif len(later) > 1:
            later.pop(0)  # the oldest follow-up and its answer
        else:
            raise ConversationTooLong(len(prompt), limit)


def followup_spec(spec: PromptSpec) -> PromptSpec:
    """The original request's template with the follow-up's own sentence among the
    instructions an answer must not repeat (PromptSpec.clean)."""
    return dataclasses.replace(spec, instructions=spec.instructions + (ASK,))


def clean_spec(*, content_type: str, prompt: str, style: str, length: str,
               followup: bool) -> PromptSpec:
    spec = build_prompt(content_type, prompt, style=style, length=length)
    return followup_spec(spec) if followup else spec
