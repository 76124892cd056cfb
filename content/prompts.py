"""Prompt templates per content type, with a style and a length.

The writer's pages and the `generate` command both build prompts here, so a blog post
asked for in the browser and on the command line is the same request.
"""

from __future__ import annotations

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
_TEMPLATES = {
    "blog": ("Write a {style} blog post about: {prompt}\n"
             "Start with a title line, then an engaging introduction, clear sections with "
             "headings, and a conclusion. Length: {words}."),
    "email": ("Write a {style} email about: {prompt}\n"
              "Begin with a line 'Subject: ...', then the body with a greeting and a "
              "sign-off. Keep it professional in substance, {style} in tone. Length: {words}."),
    "code": ("{prompt}\n"
             "Write clean, commented code with error handling, in a fenced code block with "
             "its language, then explain briefly how it works. Style of the explanation: "
             "{style}."),
    "summary": ("Summarize the following text as key points, one per line starting with "
                "'- ', {words_short}. Tone: {style}.\n\n{prompt}"),
}
_SUMMARY_WORDS = {"short": "in 3 points", "medium": "in 5 points", "long": "in 8 points"}


@dataclass(frozen=True)
class PromptSpec:
    content_type: str
    style: str
    length: str
    text: str
    max_tokens: int


def build_prompt(content_type: str, prompt: str, *, style: str = "professional",
                 length: str = "medium") -> PromptSpec:
    if content_type not in CONTENT_TYPES:
        raise ValueError(f"unknown type {content_type!r}; one of {', '.join(CONTENT_TYPES)}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; one of {', '.join(STYLES)}")
    if length not in LENGTHS:
        raise ValueError(f"unknown length {length!r}; one of {', '.join(LENGTHS)}")
    text = _TEMPLATES[content_type].format(prompt=prompt.strip(), style=style,
                                           words=_WORDS[length],
                                           words_short=_SUMMARY_WORDS[length])
    return PromptSpec(content_type, style, length, text, MAX_TOKENS[content_type][length])
