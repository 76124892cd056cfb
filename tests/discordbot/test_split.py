"""Splitting answers into Discord messages: never past 2,000 characters, never through a
code block that fits in one message, and a longer block closed and reopened in its
language."""

from hypothesis import given
from hypothesis import strategies as st

from discordbot.split import LIMIT, split_message

FENCE = "```"


def fenced(language: str, lines: list[str]) -> str:
    return "\n".join([FENCE + language, *lines, FENCE])


def blocks_in(message: str) -> list[tuple[str, str]]:
    """(language, body) of each code block in a message, as Discord reads them."""
    parts = message.split(FENCE)
    assert len(parts) % 2 == 1, f"a fence is left open in {message[:80]!r}"
    out = []
    for part in parts[1::2]:
        first, _, rest = part.partition("\n")
        out.append((first.strip(), rest.rstrip("\n")))
    return out


def test_a_short_answer_is_one_message_as_it_is():
    assert split_message("Hello there.\n\nA second paragraph.") == [
        "Hello there.\n\nA second paragraph."]


def test_a_blank_answer_is_no_message():
    assert split_message("") == [] and split_message(" \n\n \n") == []


def test_paragraphs_are_packed_and_cut_only_between_them():
    paragraphs = [f"Paragraph {i}. " + "word " * 80 for i in range(12)]
    messages = split_message("\n\n".join(paragraphs))
    assert len(messages) > 1
    assert all(len(m) <= LIMIT for m in messages)
    # every paragraph arrives whole, in order
    assert [p.strip() for m in messages for p in m.split("\n\n")] == [
        p.strip() for p in paragraphs]


def test_a_code_block_that_fits_is_never_split_across_messages():
    prose = "Intro. " * 200  # 1,400 characters: the block cannot join it
    block = fenced("python", [f"print({i})" for i in range(60)])
    assert len(block) < LIMIT
    messages = split_message(prose + "\n\n" + block + "\n\nThat is all.")
    assert all(len(m) <= LIMIT for m in messages)
    holding = [m for m in messages if FENCE in m]
    assert len(holding) == 1 and block in holding[0]


def test_a_single_code_block_longer_than_a_message_is_closed_and_reopened_in_its_language():
    lines = [f"    total += values[{i}]  # add the {i}th value" for i in range(150)]
    block = fenced("python", lines)
    assert len(block) > 2 * LIMIT
    messages = split_message(block)
    assert len(messages) >= 3
    assert all(len(m) <= LIMIT for m in messages)
    bodies = []
    for message in messages:
        assert message.startswith("```python\n") and message.endswith("\n```")
        (language, body), = blocks_in(message)
        assert language == "python"
        bodies.append(body)
    assert "\n".join(bodies).split("\n") == lines  # every line once, whole, in order


def test_a_code_line_longer_than_a_whole_message_is_cut_inside_the_fence():
    line = "x = '" + "a" * 4500 + "'"
    messages = split_message(fenced("js", [line]))
    assert all(len(m) <= LIMIT and m.startswith("```js\n") and m.endswith("\n```")
               for m in messages)
    assert "".join(body for m in messages for _, body in blocks_in(m)) == line


def test_an_unclosed_fence_is_closed():
    (message,) = split_message("Here:\n```bash\necho hi")
    assert message == "Here:\n\n```bash\necho hi\n```"


def test_fences_mid_line_are_read_as_discord_reads_them():
    (message,) = split_message("Run ```sh\nls -l\n``` and look.")
    assert message == "Run\n\n```sh\nls -l\n```\n\nand look."


def test_a_block_without_a_language_stays_without_one():
    lines = [f"line {i} " + "z" * 30 for i in range(120)]
    messages = split_message(fenced("", lines))
    assert len(messages) >= 2
    assert all(m.startswith("```\n") for m in messages)


def test_two_blocks_and_their_prose_keep_their_order_and_languages():
    text = ("First the Python:\n\n" + fenced("python", ["def f():", "    return 1"] * 200)
            + "\n\nThen the SQL:\n\n" + fenced("sql", ["SELECT 1;"] * 30) + "\n\nDone.")
    messages = split_message(text)
    assert all(len(m) <= LIMIT for m in messages)
    languages = [lang for m in messages for lang, _ in blocks_in(m)]
    assert languages[0] == "python" and languages[-1] == "sql"
    assert set(languages) == {"python", "sql"}
    assert messages[0].startswith("First the Python:")
    assert messages[-1].endswith("Done.")


def test_a_long_line_of_prose_is_cut_between_words():
    words = " ".join(f"word{i}" for i in range(900))
    messages = split_message(words)
    assert all(len(m) <= LIMIT for m in messages)
    assert " ".join(messages).split() == words.split()


_text = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(blacklist_characters="`\r"), min_size=1,
                max_size=2500).filter(str.strip),
        st.builds(fenced, st.sampled_from(["", "python", "js", "c++"]),
                  st.lists(st.text(alphabet=st.characters(blacklist_characters="`\r\n"),
                                   max_size=300), min_size=1, max_size=40))),
    min_size=1, max_size=6).map("\n\n".join)


@given(_text)
def test_any_answer_splits_into_messages_that_fit_and_each_close_their_blocks(text):
    messages = split_message(text)
    for message in messages:
        assert 0 < len(message) <= LIMIT
        blocks_in(message)  # balanced fences


@given(st.lists(st.builds(fenced, st.sampled_from(["python", "go"]),
                          st.lists(st.from_regex(r"[a-z=()+0-9][a-z =()+0-9]{0,80}",
                                                 fullmatch=True), min_size=1, max_size=40)),
                min_size=1, max_size=6))
def test_blocks_that_fit_each_arrive_whole_in_one_message(blocks):
    messages = split_message("\n\n".join(blocks))
    for block in blocks:
        assert len(block) <= LIMIT
        assert any(block in message for message in messages)
