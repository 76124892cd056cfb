"""Splitting an answer into Discord messages of at most 2,000 characters.

Cuts fall between paragraphs and code blocks; a paragraph too long for one message is cut
between lines, then words; a code block too long for one message is cut between its lines
and each piece closed and reopened with the same fence and language, so every message
renders on its own. A fence left open (a stream that has not finished, or a model that
forgot to close it) is closed.

Fences are read as Discord reads them: a code block opens at any ``` and closes at the
next one, wherever on a line they stand, and its first line is the language when it is a
single word. (Discord has no ~~~ fences.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LIMIT = 2000
FENCE = "```"
_LANGUAGE = re.compile(r"[\w+#.-]+")


@dataclass(frozen=True)
class _Block:
    text: str
    language: str | None = None  # None for prose; "" for a code block with no language
    lines: tuple[str, ...] = ()  # a code block's lines between its fences

    @property
    def is_code(self) -> bool:
        return self.language is not None


def code_block(lines: list[str] | tuple[str, ...], language: str = "") -> str:
    return "\n".join([FENCE + language, *lines, FENCE])


def _blocks(text: str) -> list[_Block]:
    """Prose paragraphs and code blocks, in order."""
    blocks: list[_Block] = []
    for i, part in enumerate(text.replace("\r\n", "\n").split(FENCE)):
        if i % 2 == 0:
            for paragraph in re.split(r"\n[ \t]*\n", part):
                if paragraph.strip():
                    blocks.append(_Block(paragraph.strip()))
            continue
        first, newline, rest = part.partition("\n")
        language = ""
        if newline and _LANGUAGE.fullmatch(first.strip()):
            language, part = first.strip(), rest
        elif newline and not first.strip():
            part = rest
        lines = part.split("\n")
        while lines and not lines[-1].strip():  # the newline (or indent) before the fence
            lines.pop()
        if lines:
            blocks.append(_Block(code_block(lines, language), language, tuple(lines)))
    return blocks


def _cut_prose(text: str, limit: int) -> list[str]:
    """A too-long paragraph: between lines, then between words, then anywhere."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit + 1]
        at = window.rfind("\n")
        if at <= 0:
            at = window.rfind(" ")
        if at <= 0:
            at = limit
        pieces.append(rest[:at].rstrip())
        rest = rest[at:].lstrip("\n ")
    pieces.append(rest)
    return [piece for piece in pieces if piece.strip()]


def _cut_code(block: _Block, limit: int) -> list[str]:
    """A code block too long for one message: runs of whole lines, each fenced."""
    language = block.language or ""
    room = limit - len(code_block([], language)) - 1  # the fences and the body's newlines
    if room < 1:
        raise ValueError(f"a limit of {limit} leaves no room inside a {language!r} block")
    lines: list[str] = []
    for line in block.lines:  # a line longer than a whole message is cut where it must be
        lines += [line[j:j + room] for j in range(0, len(line), room)] or [""]
    pieces: list[str] = []
    run: list[str] = []
    size = -1
    for line in lines:
        if run and size + 1 + len(line) > room:
            pieces.append(code_block(run, language))
            run, size = [], -1
        run.append(line)
        size += 1 + len(line)
    if run:
        pieces.append(code_block(run, language))
    return pieces


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """`text` as messages of at most `limit` characters each (none when it is blank)."""
    messages: list[str] = []
    current = ""
    for block in _blocks(text):
        if len(block.text) <= limit:
            pieces = [block.text]
        elif block.is_code:
            pieces = _cut_code(block, limit)
        else:
            pieces = _cut_prose(block.text, limit)
        for piece in pieces:
            if current and len(current) + 2 + len(piece) <= limit:
                current += "\n\n" + piece
            else:
                if current:
                    messages.append(current)
                current = piece
    if current:
        messages.append(current)
    return messages
