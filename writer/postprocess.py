"""Shaping a finished text by its type: a blog gets a title and sections, an email a
subject and a body, code its blocks with the language detected and highlighted, a
summary its key points. Pure functions of the text; everything they return is data that
templates escape, except the highlighted HTML, which Pygments escapes itself."""

from __future__ import annotations

import math
import re

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_by_name, guess_lexer
from pygments.util import ClassNotFound

WORDS_PER_MINUTE = 200
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$|^\s*\*\*(.+?)\*\*\s*$")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*\S)")


def _strip_markup(line: str) -> str:
    return re.sub(r"^[#\s*_]+|[*_\s]+$", "", line).strip()


def word_count(text: str) -> int:
    return len(re.findall(r"\b\w+\b", text))


def process_blog(text: str) -> dict:
    lines = [line for line in text.strip().splitlines()]
    title = ""
    body_start = 0
    for i, line in enumerate(lines):
        if line.strip():
            candidate = _strip_markup(line.removeprefix("Title:").strip())
            if len(candidate) <= 120:
                title = candidate
                body_start = i + 1
            break
    sections: list[dict] = []
    current = {"heading": "", "body": []}
    for line in lines[body_start:]:
        match = _HEADING.match(line)
        if match:
            if current["heading"] or any(p.strip() for p in current["body"]):
                sections.append(current)
            current = {"heading": (match.group(2) or match.group(3)).strip(), "body": []}
        else:
            current["body"].append(line)
    if current["heading"] or any(p.strip() for p in current["body"]):
        sections.append(current)
    shaped = []
    for section in sections:
        paragraphs = [p.strip() for p in "\n".join(section["body"]).split("\n\n") if p.strip()]
        shaped.append({"heading": section["heading"], "paragraphs": paragraphs})
    words = word_count(text)
    return {"title": title or "Untitled", "sections": shaped, "word_count": words,
            "reading_minutes": max(1, math.ceil(words / WORDS_PER_MINUTE)) if words else 0}


def process_email(text: str) -> dict:
    lines = text.strip().splitlines()
    subject = ""
    rest = lines
    for i, line in enumerate(lines):
        if line.strip():
            match = re.match(r"^\s*\**subject\**\s*:\s*(.+)$", line, re.I)
            if match:
                subject = _strip_markup(match.group(1))
                rest = lines[i + 1:]
            break
    body = "\n".join(rest).strip()
    if not subject:
        first = next((line for line in body.splitlines() if line.strip()), "")
        subject = (first[:60] + "…") if len(first) > 60 else first
    return {"subject": subject, "body": body}


def detect_language(code: str, hint: str = "") -> str:
    if hint:
        try:
            return get_lexer_by_name(hint.lower()).aliases[0]
        except ClassNotFound:
            pass
    try:
        lexer = guess_lexer(code)
    except ClassNotFound:
        return "text"
    return lexer.aliases[0] if lexer.aliases else "text"


def _highlight(code: str, language: str) -> str:
    try:
        lexer = get_lexer_by_name(language)
    except ClassNotFound:
        lexer = TextLexer()
    return highlight(code, lexer, HtmlFormatter(nowrap=False, cssclass="highlight"))


def process_code(text: str) -> dict:
    blocks = []
    for match in _FENCE.finditer(text):
        code = match.group(2).rstrip("\n")
        if not code.strip():
            continue
        language = detect_language(code, match.group(1))
        blocks.append({"language": language, "code": code, "html": _highlight(code, language)})
    explanation = _FENCE.sub("", text).strip()
    if not blocks and text.strip():
        # No fences: keep the lines that look like code as one block, if there are any.
        code_lines = [ln for ln in text.splitlines()
                      if re.match(r"^\s*(def |class |import |from |function |const |let |"
                                  r"var |#include|public |return\b|if\s*\(|for\s*\(|\}|\{)", ln)
                      or (ln.startswith("    ") and ln.strip())]
        if len(code_lines) >= 2:
            code = "\n".join(code_lines)
            language = detect_language(code)
            blocks.append({"language": language, "code": code,
                           "html": _highlight(code, language)})
            explanation = "\n".join(ln for ln in text.splitlines()
                                    if ln not in code_lines).strip()
    return {"blocks": blocks, "explanation": explanation}


def process_summary(text: str) -> dict:
    points = [m.group(1).strip() for line in text.splitlines()
              if (m := _BULLET.match(line))]
    if not points:
        sentences = re.split(r"(?<=[.!?])\s+", text.strip())
        points = [s.strip() for s in sentences if len(s.strip()) > 2]
    return {"points": points}


PROCESSORS = {"blog": process_blog, "email": process_email, "code": process_code,
              "summary": process_summary}


def process(content_type: str, text: str) -> dict:
    return PROCESSORS[content_type](text)


def to_markdown(content_type: str, text: str, processed: dict) -> str:
    if content_type == "blog":
        out = [f"# {processed['title']}", ""]
        for section in processed["sections"]:
            if section["heading"]:
                out += [f"## {section['heading']}", ""]
            for paragraph in section["paragraphs"]:
                out += [paragraph, ""]
        return "\n".join(out).strip() + "\n"
    if content_type == "email":
        return f"**Subject:** {processed['subject']}\n\n{processed['body']}\n"
    if content_type == "code":
        out = [f"```{b['language']}\n{b['code']}\n```" for b in processed["blocks"]]
        if processed["explanation"]:
            out.append(processed["explanation"])
        return "\n\n".join(out) + "\n"
    return "\n".join(f"- {p}" for p in processed["points"]) + "\n"
