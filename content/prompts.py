"""Prompt templates per content type, with a style and a length, and the cleaning of what
the model writes back.

The writer's pages, the `generate` command and the Discord bot all build prompts here, so
a blog post asked for in the browser and on the command line is the same request.

Small models copy their instructions into the answer when they look like a form to fill
in ("Tone: professional.", "Length: about 150 words."). So the instructions are plain
sentences that ask, with the style and length inside them, never label lines; the
person's own text comes first and the instructions after it, where a small model reads
them as the request. `PromptSpec.clean` then drops any line of the answer that still
repeats an instruction (docs/writer.md, "Prompts").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONTENT_TYPES = ("blog", "email", "code", "summary")
STYLES = ("professional", "casual", "creative", "technical")
LENGTHS = ("short", "medium", "long")

# Tokens per length, per type: what the model is allowed to write.
MAX_TOKENS = {
    "blog": {"short": 256, "medium": 512, "long": 1024},
    "email": {"short": 128, "medium": 256, "long": 512},
    "code": {"short": 256, "medium": 512, "long": 1024},
    "summary": {"short": 96, "medium": 192, "long": 384},
}
_WORDS = {"short": "about 150 words", "medium": "about 300 words", "long": "about 600 words"}
_POINTS = {"short": "3", "medium": "5", "long": "8"}

# Each type: the request with the person's text in it, then the instructions, one
# sentence each. {style}, {words} and {points} are filled in; {prompt} is the person's.
_TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "blog": ("Write a {style} blog post about {prompt}.", (
        "Start with a title, then an introduction, a few sections with headings and a "
        "conclusion.",
        "Keep it to {words}.")),
    "email": ("Write a {style} email about {prompt}.", (
        "Begin with the subject line, then a greeting, the message and a sign-off.",
        "Keep it to {words}.")),
    "code": ("{prompt}", (
        "Answer with the code in a fenced code block marked with its language, with "
        "comments and error handling, then explain in a few {style} sentences how it "
        "works.",)),
    "summary": ("{prompt}", (
        "Summarize the text above in {points} key points, each on its own line starting "
        "with '- ', in a {style} voice.",)),
}
# A line that is only a label and a short value: what a model writes when it copies a
# form ("Tone: professional.", "**Length:** about 150 words", "Style: casual").
_LABEL_LINE = re.compile(
    r"^\W*(tone|style|voice|length|format|word count|words|instructions?|"
    r"style of the explanation)\W*:\W*[\w' -]{0,40}\W*$", re.I)
# The shortest instruction fragment (in words) that counts as an echo when it appears in
# a line: shorter ones ("a few sections") occur in honest text.
ECHO_MIN_WORDS = 5


@dataclass(frozen=True)
class PromptSpec:
    content_type: str
    style: str
    length: str
    text: str
    max_tokens: int
    # The instruction sentences as sent (without the person's text): what an answer
    # must not repeat.
    instructions: tuple[str, ...] = ()

    def echoes(self, text: str) -> list[str]:
        """The lines of `text` that repeat the instructions or are a copied label line."""
        fragments = [_words(s) for s in self.instructions]
        found = []
        for line in text.splitlines():
            said = _words(line)
            if not said:
                continue
            if _LABEL_LINE.match(line.strip()) or any(
                    _echoes(said, fragment) for fragment in fragments):
                found.append(line)
        return found

    def clean(self, text: str) -> str:
        """`text` without the lines that repeat the instructions (blank lines left where
        they stood are collapsed)."""
        echoed = set(self.echoes(text))
        if not echoed:
            return text
        kept = [line for line in text.splitlines() if line not in echoed]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _echoes(said: list[str], fragment: list[str]) -> bool:
    """Whether a line repeats an instruction: it holds ECHO_MIN_WORDS words in a row of it
    (or all of it, when shorter), or is itself a run of the instruction's words."""
    if not fragment:
        return False
    if len(said) >= 3 and _contains(fragment, said):
        return True
    run = min(ECHO_MIN_WORDS, len(fragment))
    shingles = {tuple(fragment[i:i + run]) for i in range(len(fragment) - run + 1)}
    return any(tuple(said[i:i + run]) in shingles for i in range(len(said) - run + 1))


def _contains(whole: list[str], part: list[str]) -> bool:
    return any(whole[i:i + len(part)] == part for i in range(len(whole) - len(part) + 1))


def build_prompt(content_type: str, prompt: str, *, style: str = "professional",
                 length: str = "medium") -> PromptSpec:
    if content_type not in CONTENT_TYPES:
        raise ValueError(f"unknown type {content_type!r}; one of {', '.join(CONTENT_TYPES)}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; one of {', '.join(STYLES)}")
    if length not in LENGTHS:
        raise ValueError(f"unknown length {length!r}; one of {', '.join(LENGTHS)}")
    request, instructions = _TEMPLATES[content_type]
    filled = tuple(s.format(style=style, words=_WORDS[length], points=_POINTS[length])
                   for s in instructions)
    if request == "{prompt}":  # the person's text is the request itself
        asked, own = prompt.strip(), ()
    else:
        asked = request.format(prompt=prompt.strip().rstrip("."), style=style)
        own = (request.split("{prompt}")[0].format(style=style).strip(),)
    text = f"{asked}\n\n{' '.join(filled)}"
    return PromptSpec(content_type, style, length, text, MAX_TOKENS[content_type][length],
                      instructions=own + filled)
