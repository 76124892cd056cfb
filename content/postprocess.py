"""Shaping a finished text by its type: a blog gets a title and sections, an email a
subject and a body, code its blocks with the language detected and highlighted, a
summary its key points. Pure functions of the text (and, for a fallback title or
subject, the prompt); everything they return is data that templates escape, except the
highlighted HTML, which Pygments escapes itself."""

from __future__ import annotations

import json
import math
import re

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_by_name, guess_lexer
from pygments.util import ClassNotFound

WORDS_PER_MINUTE = 200
TITLE_MAX_CHARS = 120
_FENCE = re.compile(r"(```|~~~)[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:\1|\Z)", re.S)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$|^\s*(?:\*\*|__)(.+?)(?:\*\*|__)\s*:?\s*$")
_TITLE_LABEL = re.compile(r"^[#*_\s]*title[*_\s]*:[*_\s]*(.*?)[*_\s]*$", re.I)
_SUBJECT_LABEL = re.compile(r"^[#*_\s]*subject(?: line)?[*_\s]*:[*_\s]*(.*?)[*_\s]*$", re.I)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+(.*\S)")
_SENTENCE_END = (".", "!", "?", ",", ";")


def _strip_markup(line: str) -> str:
    return re.sub(r"^[#\s*_]+|[*_\s]+$", "", line).strip()


def _from_prompt(prompt: str, limit: int = 80) -> str:
    """A title or subject made from the prompt, cut at a word boundary."""
    words = " ".join(prompt.split())
    if len(words) > limit:
        words = words[:limit].rsplit(" ", 1)[0].rstrip(",.;:") + "…"
    return words[:1].upper() + words[1:]


def word_count(text: str) -> int:
    return len(re.findall(r"\b\w+\b", text))


def _dedupe(items: list[str]) -> list[str]:
    # Small models loop; the same point twice is noise, not emphasis.
    seen: set[str] = set()
    kept = []
    for item in items:
        key = " ".join(item.lower().split())
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


# -- blog ---------------------------------------------------------------------------------

def _heading_text(line: str, *, standalone: bool) -> str | None:
    """The heading a line stands for: a Markdown heading, a bold line, or (when it stands
    alone between blank lines) a short line with no sentence punctuation."""
    match = _HEADING.match(line)
    if match:
        return _strip_markup(match.group(2) or match.group(3)).rstrip(":").strip() or None
    stripped = line.strip()
    if (standalone and stripped and len(stripped) <= 60 and len(stripped.split()) <= 8
            and not stripped.endswith(_SENTENCE_END) and not _BULLET.match(line)):
        return _strip_markup(stripped).rstrip(":").strip() or None
    return None


def process_blog(text: str, *, prompt: str = "") -> dict:
    lines = text.strip().splitlines()
    title = ""
    body_start = 0
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None:
        line = lines[first]
        label = _TITLE_LABEL.match(line)
        followed_by_blank = first + 1 >= len(lines) or not lines[first + 1].strip()
        candidate = (_strip_markup(label.group(1)) if label
                     else _heading_text(line, standalone=followed_by_blank
                                        and first + 1 < len(lines)))
        if candidate and len(candidate) <= TITLE_MAX_CHARS:
            title = candidate
            body_start = first + 1

    sections: list[dict] = []
    current: dict = {"heading": "", "body": []}
    body = lines[body_start:]
    for i, line in enumerate(body):
        standalone = ((i == 0 or not body[i - 1].strip())
                      and i + 1 < len(body) and not body[i + 1].strip())
        heading = _heading_text(line, standalone=standalone) if line.strip() else None
        if heading:
            if current["heading"] or any(p.strip() for p in current["body"]):
                sections.append(current)
            current = {"heading": heading, "body": []}
        else:
            current["body"].append(line)
    if current["heading"] or any(p.strip() for p in current["body"]):
        sections.append(current)
    shaped = []
    for section in sections:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", "\n".join(section["body"]))
                      if p.strip()]
        shaped.append({"heading": section["heading"], "paragraphs": paragraphs})
    words = word_count(text)
    return {"title": title or (_from_prompt(prompt) if prompt.strip() else "Untitled"),
            "sections": shaped, "word_count": words,
            "reading_minutes": max(1, math.ceil(words / WORDS_PER_MINUTE)) if words else 0}


# -- email --------------------------------------------------------------------------------

_GREETING = re.compile(r"^\s*(dear|hi|hello|hey|greetings|good (morning|afternoon|evening))\b",
                       re.I)


def process_email(text: str, *, prompt: str = "") -> dict:
    lines = text.strip().splitlines()
    subject = ""
    rest = lines
    # The subject line may follow a preamble ("Here is your email:"); look a little way.
    nonblank = [i for i, line in enumerate(lines) if line.strip()][:4]
    for i in nonblank:
        match = _SUBJECT_LABEL.match(lines[i])
        if match:
            subject = _strip_markup(match.group(1))
            rest = lines[i + 1:]
            break
        if _GREETING.match(lines[i]):
            break
    body = "\n".join(rest).strip()
    if not subject:
        if prompt.strip():
            subject = _from_prompt(prompt, 70)
        else:
            filled = [line.strip() for line in body.splitlines() if line.strip()]
            first = next((line for line in filled if not _GREETING.match(line)),
                         filled[0] if filled else "")
            subject = (first[:60].rstrip() + "…") if len(first) > 60 else first
    return {"subject": subject, "body": body}


# -- code ---------------------------------------------------------------------------------

# Pygments' guess_lexer scores every lexer it knows and is easily fooled by short snippets
# (plain Python comes back as "scdoc", JavaScript as "GDScript"). Models answer in a
# handful of common languages, so their telltale constructs decide first, and Pygments'
# own guess is taken only when it is confident.
_SIGNS: dict[str, list[str]] = {
    "python": [r"^\s*def \w+\(.*\)\s*(->.*)?:\s*$", r"^\s*(from [\w.]+ )?import \w[\w.]*",
               r"^\s*class \w+(\(.*\))?:\s*$", r"\bself\.", r"^\s*(elif|except|try|with)\b.*:\s*$",
               r"\bprint\(", r"\b(None|True|False)\b", r"^\s*if .*:\s*$"],
    "javascript": [r"\b(const|let|var)\s+\w+\s*=", r"=>", r"\bconsole\.\w+\(",
                   r"\bfunction\s*\w*\s*\(", r"\brequire\(|\bmodule\.exports\b", r"===|!==",
                   r"\bdocument\.\w+"],
    "typescript": [r":\s*(string|number|boolean|void)\b", r"^\s*(export\s+)?interface\s+\w+",
                   r"\bas\s+(string|number)\b"],
    "java": [r"\bpublic\s+(static\s+)?(final\s+)?(class|void|int|String)\b",
             r"\bSystem\.out\.print", r"^\s*import java\.", r"\bnew\s+[A-Z]\w*\("],
    "c": [r"^\s*#include\s*<\w+\.h>", r"\bint\s+main\s*\(", r"\bprintf\(", r"\bmalloc\("],
    "cpp": [r"\bstd::", r"^\s*#include\s*<(iostream|vector|string|map)>", r"\bcout\s*<<"],
    "csharp": [r"^\s*using System", r"\bConsole\.Write", r"^\s*namespace\s+[\w.]+"],
    "go": [r"^\s*package \w+\s*$", r"\bfunc\s+(\(\w+ \*?\w+\)\s*)?\w*\(", r"\bfmt\.\w+\(",
           r":="],
    "rust": [r"\bfn\s+\w+\s*[<(]", r"\blet\s+mut\b", r"\b\w+!\(", r"^\s*impl\b",
             r"^\s*use\s+\w+::"],
    "ruby": [r"^\s*def \w+[^:(]*$", r"^\s*end\s*$", r"\bputs\b", r"\.each\s+do\b"],
    "php": [r"<\?php", r"\$\w+\s*=", r"\becho\b.*;\s*$"],
    "sql": [r"(?i)\bselect\b.+\bfrom\b", r"(?i)\b(insert\s+into|create\s+table|delete\s+from)\b",
            r"(?i)^\s*update\s+\w+\s+set\b", r"(?i)\b(where|order\s+by|group\s+by|join)\b"],
    "bash": [r"^#!.*\b(ba|z)?sh\b", r"^\s*(echo|cd|ls|export|sudo|apt(-get)?|pip|npm|curl)\b",
             r"^\s*(fi|done|esac)\s*$", r"\$\{?\w+\}?"],
    "html": [r"<(html|head|body|div|span|p|a|ul|li|table)\b[^>]*>", r"</\w+>",
             r"<!doctype html>"],
    "css": [r"^\s*[\w.#:\-\[\]=\"' >]+\s*\{\s*$", r"^\s*[\w-]+\s*:\s*[^;]+;\s*$"],
}
_SIGN_PATTERNS = {lang: [re.compile(p, re.M) for p in ps] for lang, ps in _SIGNS.items()}


def detect_language(code: str, hint: str = "") -> str:
    """A Pygments alias for the code: the fence's info string when Pygments knows it, else
    the language whose constructs the code shows most, else Pygments' guess when it is
    sure, else "text"."""
    if hint:
        try:
            return get_lexer_by_name(hint.lower()).aliases[0]
        except ClassNotFound:
            pass
    stripped = code.strip()
    if not stripped:
        return "text"
    if stripped[0] in "[{":
        try:
            json.loads(stripped)
            return "json"
        except ValueError:
            pass
    scores = {lang: sum(1 for p in patterns if p.search(code))
              for lang, patterns in _SIGN_PATTERNS.items()}
    # TypeScript is JavaScript with types; C++ is often C with a few more signs.
    if scores["typescript"]:
        scores["typescript"] += scores["javascript"]
    if scores["cpp"]:
        scores["cpp"] += scores["c"]
    best = max(scores, key=lambda lang: scores[lang])
    if scores[best] >= 1:
        return best
    try:
        lexer = guess_lexer(code)
    except ClassNotFound:
        return "text"
    if lexer.analyse_text(code) >= 0.5 and lexer.aliases:
        return lexer.aliases[0]
    return "text"


def _highlight(code: str, language: str) -> str:
    try:
        lexer = get_lexer_by_name(language)
    except ClassNotFound:
        lexer = TextLexer()
    return highlight(code, lexer, HtmlFormatter(cssclass="highlight"))


def _block(code: str, hint: str = "") -> dict:
    language = detect_language(code, hint)
    return {"language": language, "code": code, "html": _highlight(code, language)}


_CODE_LINE = re.compile(r"^\s*(def |class |import |from \w+ import |function |const |let |var |"
                        r"#include|public |private |return\b|if\s*\(|for\s*\(|while\s*\(|"
                        r"\}|\{|SELECT\b|INSERT\b|CREATE\b)")


def process_code(text: str, *, prompt: str = "") -> dict:
    blocks = [_block(m.group(3).rstrip("\n"), m.group(2)) for m in _FENCE.finditer(text)
              if m.group(3).strip()]
    explanation = _FENCE.sub("", text).strip()
    if not blocks and text.strip():
        # No fences: the lines that look like code, with their indented continuations.
        code_lines = [ln for ln in text.splitlines()
                      if _CODE_LINE.match(ln) or (ln.startswith(("    ", "\t")) and ln.strip())]
        if len(code_lines) >= 2:
            blocks.append(_block("\n".join(code_lines)))
            chosen = set(code_lines)
            explanation = "\n".join(ln for ln in text.splitlines() if ln not in chosen).strip()
    explanation = re.sub(r"^[#*_\s]*explanation[*_\s]*:[*_\s]*", "", explanation, flags=re.I)
    return {"blocks": blocks, "explanation": explanation.strip()}


# -- summary ------------------------------------------------------------------------------

def process_summary(text: str, *, prompt: str = "") -> dict:
    points = [_strip_markup(re.sub(r"(\*\*|__)(.+?)\1", r"\2", m.group(1)))
              for line in text.splitlines()
              if (m := _BULLET.match(line))]
    if not points:
        sentences = re.split(r"(?<=[.!?])\s+", text.strip())
        points = [s.strip() for s in sentences
                  if len(s.strip()) > 2 and not s.strip().endswith(":")]
    return {"points": _dedupe([p for p in points if p])}


PROCESSORS = {"blog": process_blog, "email": process_email, "code": process_code,
              "summary": process_summary}


def process(content_type: str, text: str, *, prompt: str = "") -> dict:
    """The shaped result of a text of this type; `prompt` supplies a title or subject when
    the text has none."""
    return PROCESSORS[content_type](text, prompt=prompt)


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
        return f"**Subject:** {processed['subject']}\n\n{processed['body']}".strip() + "\n"
    if content_type == "code":
        out = [f"```{b['language']}\n{b['code']}\n```" for b in processed["blocks"]]
        if processed["explanation"]:
            out.append(processed["explanation"])
        return "\n\n".join(out) + "\n" if out else ""
    return "".join(f"- {p}\n" for p in processed["points"])
