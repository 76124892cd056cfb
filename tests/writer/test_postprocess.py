import threading

import pytest

from marketplace.prompts import build_prompt
from writer.postprocess import (
    detect_language,
    process_blog,
    process_code,
    process_email,
    process_summary,
    to_markdown,
)


def test_a_blog_gets_its_title_sections_word_count_and_reading_time():
    text = ("# Why We Walk\n\nWalking clears the mind.\n\n## Health\n\nIt helps the heart.\n\n"
            "## Thinking\n\nIdeas come while moving.\n\nSo walk.")
    blog = process_blog(text)
    assert blog["title"] == "Why We Walk"
    assert [s["heading"] for s in blog["sections"]] == ["", "Health", "Thinking"]
    assert blog["sections"][2]["paragraphs"] == ["Ideas come while moving.", "So walk."]
    assert blog["word_count"] == 19
    assert blog["reading_minutes"] == 1


def test_a_blog_without_a_title_line_uses_its_first_line_or_untitled():
    assert process_blog("Just one line of text.")["title"] == "Just one line of text."
    assert process_blog("")["title"] == "Untitled"
    long_first = "word " * 60
    assert process_blog(long_first + "\n\nMore.")["title"] == "Untitled"


def test_bold_headings_count_as_sections():
    blog = process_blog("Title: Rivers\n\n**Where they start**\nIn hills.\n")
    assert blog["title"] == "Rivers"
    assert blog["sections"][0]["heading"] == "Where they start"


def test_an_email_splits_into_subject_and_body():
    email = process_email("Subject: Meeting moved\n\nHi team,\n\nThe meeting is at 3.\n\nBest,\nA")
    assert email["subject"] == "Meeting moved"
    assert email["body"].startswith("Hi team,")
    assert "Subject" not in email["body"]


def test_an_email_without_a_subject_line_takes_one_from_its_first_line():
    email = process_email("Hello Sam, thanks for the quick reply about the invoice.")
    assert email["subject"].startswith("Hello Sam")


def test_code_blocks_keep_their_language_and_are_highlighted_and_escaped():
    text = ("Here is the code:\n```python\ndef add(a, b):\n    return a + b  # <sum>\n```\n"
            "And in JS:\n```javascript\nconst x = 1;\n```\nThat is all.")
    code = process_code(text)
    assert [b["language"] for b in code["blocks"]] == ["python", "javascript"]
    assert "&lt;sum&gt;" in code["blocks"][0]["html"]
    assert "<sum>" not in code["blocks"][0]["html"]
    assert "Here is the code:" in code["explanation"]
    assert "```" not in code["explanation"]


def test_a_fence_without_a_language_is_detected():
    code = process_code("```\n#include <stdio.h>\nint main(void) { return 0; }\n```")
    assert code["blocks"][0]["language"] in {"c", "cpp", "objective-c"}


def test_code_without_fences_still_finds_the_code_lines():
    code = process_code("def f(x):\n    return x * 2\n\nThis doubles x.")
    assert len(code["blocks"]) == 1
    assert "return x * 2" in code["blocks"][0]["code"]
    assert code["explanation"] == "This doubles x."


def test_text_with_no_code_has_no_blocks():
    code = process_code("I cannot write that.")
    assert code == {"blocks": [], "explanation": "I cannot write that."}


def test_an_unknown_fence_language_falls_back_to_detection():
    assert detect_language("SELECT * FROM users;", "nosuchlang") != "nosuchlang"


def test_a_summary_becomes_key_points():
    assert process_summary("- one\n- two\n3. three")["points"] == ["one", "two", "three"]
    assert process_summary("First fact. Second fact!")["points"] == ["First fact.",
                                                                     "Second fact!"]


def test_markdown_export_follows_the_type():
    blog = process_blog("# T\n\nBody.")
    assert to_markdown("blog", "", blog) == "# T\n\nBody.\n"
    assert to_markdown("summary", "", {"points": ["a", "b"]}) == "- a\n- b\n"


@pytest.fixture(scope="module")
def model():
    from marketplace.host.backends import LlamaCppBackend

    return LlamaCppBackend()


@pytest.mark.parametrize("kind", ["blog", "email", "code", "summary"])
def test_real_model_output_is_shaped_by_its_type(model, kind):
    from marketplace.protocol import GenerationRequest

    prompts = {"blog": "the joy of reading", "email": "asking for a day off on Friday",
               "code": "Write a Python function that reverses a string.",
               "summary": "Bees pollinate crops. Without bees, many fruits would vanish. "
                          "Farmers rent hives to keep yields high."}
    spec = build_prompt(kind, prompts[kind], length="short")
    request = GenerationRequest(model="smollm2-135m-instruct", prompt=spec.text,
                                maxTokens=120, temperature=0.0)
    text = "".join(model.stream(request, threading.Event()))
    assert text.strip()
    shaped = {"blog": process_blog, "email": process_email, "code": process_code,
              "summary": process_summary}[kind](text)
    if kind == "blog":
        assert shaped["title"] and shaped["word_count"] > 10
    elif kind == "email":
        assert shaped["subject"] and shaped["body"]
    elif kind == "code":
        assert shaped["blocks"], text
        assert shaped["blocks"][0]["language"] in {"python", "python3", "py"}
    else:
        assert len(shaped["points"]) >= 1
