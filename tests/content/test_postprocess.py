import re
import threading

import pytest

from content.postprocess import (
    detect_language,
    process,
    process_blog,
    process_code,
    process_email,
    process_summary,
    to_markdown,
)
from content.prompts import build_prompt

# -- blog ---------------------------------------------------------------------------------


def test_a_blog_gets_its_title_sections_word_count_and_reading_time():
    text = ("# Why We Walk\n\nWalking clears the mind.\n\n## Health\n\nIt helps the heart.\n\n"
            "## Thinking\n\nIdeas come while moving.\n\nSo walk.")
    blog = process_blog(text)
    assert blog["title"] == "Why We Walk"
    assert [s["heading"] for s in blog["sections"]] == ["", "Health", "Thinking"]
    assert blog["sections"][2]["paragraphs"] == ["Ideas come while moving.", "So walk."]
    assert blog["word_count"] == 19
    assert blog["reading_minutes"] == 1


def test_a_long_blog_takes_minutes_to_read():
    blog = process_blog("# T\n\n" + "word " * 1001)
    assert blog["reading_minutes"] == 6


def test_a_blog_without_a_title_line_takes_its_title_from_the_prompt():
    text = "Reading is a quiet joy that asks for nothing.\n\nIt travels with you."
    blog = process_blog(text, prompt="the joy of reading")
    assert blog["title"] == "The joy of reading"
    assert blog["sections"][0]["paragraphs"][0].startswith("Reading is a quiet joy")


def test_a_blog_without_a_title_or_a_prompt_is_untitled_and_keeps_its_text():
    blog = process_blog("Just one line of text.")
    assert blog["title"] == "Untitled"
    assert blog["sections"] == [{"heading": "", "paragraphs": ["Just one line of text."]}]
    assert process_blog("word " * 60 + "\n\nMore.")["title"] == "Untitled"


def test_a_long_prompt_makes_a_title_cut_at_a_word():
    title = process_blog("Body.", prompt="a " + "very " * 40 + "long prompt")["title"]
    assert len(title) <= 81 and title.endswith("…") and " " not in title[-2:]


def test_an_empty_blog_is_untitled_with_no_sections():
    assert process_blog("") == {"title": "Untitled", "sections": [], "word_count": 0,
                                "reading_minutes": 0}
    assert process_blog("   \n\n  ")["sections"] == []


@pytest.mark.parametrize("first_line", ["Title: Rivers", "**Title:** Rivers", "**Title: Rivers**",
                                        "# Rivers", "## Rivers", "**Rivers**", "Rivers"])
def test_title_lines_in_any_of_the_usual_forms(first_line):
    blog = process_blog(f"{first_line}\n\nThey run to the sea.")
    assert blog["title"] == "Rivers"
    assert blog["sections"][0]["paragraphs"] == ["They run to the sea."]


def test_bold_lines_and_short_lines_on_their_own_count_as_section_headings():
    text = ("Title: Rivers\n\n**Where they start**\nIn hills.\n\nIntroduction:\n\n"
            "Rivers matter.\n\nConclusion\n\nSo they do.")
    blog = process_blog(text)
    assert blog["title"] == "Rivers"
    assert [s["heading"] for s in blog["sections"]] == ["Where they start", "Introduction",
                                                        "Conclusion"]
    assert blog["sections"][2]["paragraphs"] == ["So they do."]


def test_a_short_sentence_in_a_paragraph_is_not_a_heading():
    blog = process_blog("# T\n\nThey run.\nTo the sea.\n\nShort line ends here.")
    assert [s["heading"] for s in blog["sections"]] == [""]


# -- email --------------------------------------------------------------------------------


def test_an_email_splits_into_subject_and_body():
    email = process_email("Subject: Meeting moved\n\nHi team,\n\nThe meeting is at 3.\n\nBest,\nA")
    assert email["subject"] == "Meeting moved"
    assert email["body"].startswith("Hi team,")
    assert "Subject" not in email["body"]


def test_a_subject_after_a_preamble_and_in_bold_is_found():
    email = process_email("Here is your email:\n\n**Subject:** Day off\n\nDear Ann,\nFriday?")
    assert email == {"subject": "Day off", "body": "Dear Ann,\nFriday?"}


def test_an_empty_subject_line_is_dropped_and_the_prompt_gives_the_subject():
    email = process_email("Subject:\n\nDear Ann,\n\nThe parcel is late.",
                          prompt="complaint about a late delivery")
    assert email["subject"] == "Complaint about a late delivery"
    assert email["body"] == "Dear Ann,\n\nThe parcel is late."


def test_an_email_without_a_subject_line_takes_one_from_its_first_line():
    email = process_email("Hello Sam, thanks for the quick reply about the invoice.")
    assert email["subject"].startswith("Hello Sam")
    email = process_email("Dear Sam,\n\nThe invoice is attached and paid in full today, "
                          "as agreed on the phone.")
    assert email["subject"].startswith("The invoice is attached")
    assert email["subject"].endswith("…") and len(email["subject"]) <= 61


def test_a_subject_further_down_the_body_stays_in_the_body():
    email = process_email("Dear Ann,\n\nSubject: ours\n\nBye", prompt="p")
    assert email["subject"] == "P"
    assert "Subject: ours" in email["body"]


def test_an_empty_email():
    assert process_email("") == {"subject": "", "body": ""}


# -- code ---------------------------------------------------------------------------------


def test_code_blocks_keep_their_language_and_are_highlighted_and_escaped():
    text = ("Here is the code:\n```python\ndef add(a, b):\n    return a + b  # <sum>\n```\n"
            "And in JS:\n```javascript\nconst x = 1;\n```\nThat is all.")
    code = process_code(text)
    assert [b["language"] for b in code["blocks"]] == ["python", "javascript"]
    assert "&lt;sum&gt;" in code["blocks"][0]["html"]
    assert "<sum>" not in code["blocks"][0]["html"]
    assert 'class="highlight"' in code["blocks"][0]["html"]
    assert "Here is the code:" in code["explanation"]
    assert "That is all." in code["explanation"]
    assert "```" not in code["explanation"]


@pytest.mark.parametrize("info, language", [("py", "python"), ("js", "javascript"),
                                            ("sh", "bash"), ("c++", "cpp"), ("ts", "typescript")])
def test_fence_info_strings_are_normalized(info, language):
    assert process_code(f"```{info}\nx\n```")["blocks"][0]["language"] == language


def test_a_fence_without_a_language_is_detected():
    code = process_code("```\n#include <stdio.h>\nint main(void) { return 0; }\n```")
    assert code["blocks"][0]["language"] == "c"


@pytest.mark.parametrize("snippet, language", [
    ("def f(x):\n    return x * 2", "python"),
    ("import os\nprint(os.getcwd())", "python"),
    ("const x = 1;\nconsole.log(x);", "javascript"),
    ("function add(a: number, b: number): number { return a + b; }", "typescript"),
    ("SELECT id FROM orders ORDER BY created DESC LIMIT 10;", "sql"),
    ("#include <iostream>\nint main() { std::cout << 1; }", "cpp"),
    ('public class A { public static void main(String[] a) { System.out.println(1); } }',
     "java"),
    ('package main\nimport "fmt"\nfunc main() { fmt.Println(1) }', "go"),
    ('fn main() {\n    let mut x = 1;\n    println!("{}", x);\n}', "rust"),
    ("#!/bin/bash\necho hi\nls -la", "bash"),
    ('{"a": [1, 2]}', "json"),
    ("<div><p>hi</p></div>", "html"),
    ("hello world", "text"),
    ("", "text"),
])
def test_the_language_is_detected_from_the_code(snippet, language):
    assert detect_language(snippet) == language


def test_an_unknown_fence_language_falls_back_to_detection():
    assert detect_language("SELECT * FROM users;", "nosuchlang") == "sql"


def test_an_unterminated_fence_still_makes_a_block():
    code = process_code("```python\ndef f():\n    return 1\n# and the model ran out of")
    assert code["blocks"][0]["language"] == "python"
    assert "return 1" in code["blocks"][0]["code"]


def test_a_closing_fence_on_the_codes_last_line():
    code = process_code("```python\nprint(1)```\nDone.")
    assert code["blocks"][0]["code"] == "print(1)"
    assert code["explanation"] == "Done."


def test_empty_fences_are_skipped_and_the_explanation_label_dropped():
    code = process_code("```python\n\n```\n\nExplanation: nothing to see.")
    assert code == {"blocks": [], "explanation": "nothing to see."}


def test_code_without_fences_still_finds_the_code_lines():
    code = process_code("def f(x):\n    return x * 2\n\nThis doubles x.")
    assert len(code["blocks"]) == 1
    assert code["blocks"][0]["language"] == "python"
    assert "return x * 2" in code["blocks"][0]["code"]
    assert code["explanation"] == "This doubles x."


def test_text_with_no_code_has_no_blocks():
    assert process_code("I cannot write that.") == {"blocks": [],
                                                    "explanation": "I cannot write that."}
    assert process_code("") == {"blocks": [], "explanation": ""}


def test_html_in_code_is_escaped_by_the_highlighter():
    code = process_code("```html\n<script>alert(1)</script>\n```")
    assert "<script>" not in code["blocks"][0]["html"]
    assert "&lt;" in code["blocks"][0]["html"]


# -- summary ------------------------------------------------------------------------------


def test_a_summary_becomes_key_points():
    assert process_summary("- one\n- two\n3. three")["points"] == ["one", "two", "three"]
    assert process_summary("First fact. Second fact!")["points"] == ["First fact.",
                                                                     "Second fact!"]


def test_a_summarys_preamble_repeats_and_bold_markers_are_dropped():
    text = "Here are the key points:\n- **Bees** pollinate\n- Hives\n- hives\n* Yields"
    assert process_summary(text)["points"] == ["Bees pollinate", "Hives", "Yields"]
    assert process_summary("Key points:")["points"] == []
    assert process_summary("")["points"] == []


# -- markdown -----------------------------------------------------------------------------


def test_markdown_export_follows_the_type():
    blog = process_blog("# T\n\nBody.")
    assert to_markdown("blog", "", blog) == "# T\n\nBody.\n"
    assert to_markdown("summary", "", {"points": ["a", "b"]}) == "- a\n- b\n"
    assert to_markdown("email", "", {"subject": "S", "body": "B"}) == "**Subject:** S\n\nB\n"
    code = process_code("```python\nx = 1\n```\nSets x.")
    assert to_markdown("code", "", code) == "```python\nx = 1\n```\n\nSets x.\n"


def test_markdown_export_of_empty_results_is_empty_or_untitled():
    assert to_markdown("code", "", process_code("")) == ""
    assert to_markdown("summary", "", process_summary("")) == ""
    assert to_markdown("blog", "", process_blog("")) == "# Untitled\n"


# -- real outputs of the bundled model ----------------------------------------------------

PROMPTS = {
    "blog": ["the joy of reading", "why cities need more trees"],
    "email": ["asking for a day off on Friday", "complaint about a late delivery"],
    "code": ["Write a Python function that reverses a string.",
             "Write a JavaScript function that fetches JSON from a URL.",
             "Write a SQL query for the ten newest orders."],
    "summary": ["Bees pollinate crops. Without bees, many fruits would vanish. "
                "Farmers rent hives to keep yields high."],
}
CODE_LANGUAGES = {"Python": "python", "JavaScript": "javascript", "SQL": "sql"}


@pytest.fixture(scope="session")
def model():
    from marketplace.host.backends import LlamaCppBackend

    backend = LlamaCppBackend()
    yield backend
    backend.llm.close()


def generate(model, kind: str, prompt: str, style: str) -> str:
    from marketplace.protocol import GenerationRequest

    spec = build_prompt(kind, prompt, style=style, length="short")
    request = GenerationRequest(model="smollm2-135m-instruct", prompt=spec.text,
                                maxTokens=160, temperature=0.0)
    return "".join(model.stream(request, threading.Event()))


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


@pytest.mark.parametrize("kind, prompt", [(k, p) for k, ps in PROMPTS.items() for p in ps])
@pytest.mark.parametrize("style", ["professional", "creative"])
def test_real_model_output_is_shaped_by_its_type(model, kind, prompt, style):
    text = generate(model, kind, prompt, style)
    assert text.strip()
    shaped = process(kind, text, prompt=prompt)
    if kind == "blog":
        assert shaped["title"] and len(shaped["title"]) <= 120
        assert shaped["word_count"] > 10 and shaped["reading_minutes"] >= 1
        # Nothing of the text is lost between the title and the sections.
        kept = shaped["title"] + " " + " ".join(
            s["heading"] + " " + " ".join(s["paragraphs"]) for s in shaped["sections"])
        assert set(words(text)) <= set(words(kept)) | set(words(prompt))
    elif kind == "email":
        assert shaped["subject"] and "subject" not in shaped["subject"].lower()
        assert shaped["body"] and not shaped["body"].lower().startswith("subject")
    elif kind == "code":
        assert shaped["blocks"], text
        expected = next(v for k, v in CODE_LANGUAGES.items() if k in prompt)
        assert shaped["blocks"][0]["language"] == expected
        assert "```" not in shaped["explanation"]
    else:
        points = shaped["points"]
        assert points and len(points) == len({p.lower() for p in points})
    assert to_markdown(kind, text, shaped).strip()
