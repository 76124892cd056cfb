"""No template line in what people get: every type × style × length on the bundled model,
through the host's own engine with fixed sampling keys (so every run samples the same
tokens), at the temperature the profiles use. The instructions are plain sentences the
model does not copy (content.prompts), and PromptSpec.clean drops a line that still does."""

from __future__ import annotations

import re
import threading

import pytest

from content.prompts import CONTENT_TYPES, LENGTHS, STYLES, PromptSpec, build_prompt
from marketplace import sampling
from marketplace.protocol import GenerationRequest

# Echoes come at the start of an answer ("Tone: professional." above a summary): the
# first tokens are where to look, and all the test needs to pay for.
MAX_TOKENS = 48
TEMPERATURE = 0.7  # content.profiles' default
SECRET = bytes(range(32))  # fixed: the same tokens every run
CHAIN_ID = 31337
# Raw answers (before cleaning) that may still hold an echo: the templates themselves must
# keep the model from copying them, cleaning is the last guard.
MAX_RAW_ECHOES = 1

INPUTS = {
    "blog": "the joy of reading on a train",
    "email": "moving Friday's team meeting to Monday morning",
    "code": "Write a Python function that checks whether a word is a palindrome.",
    "summary": ("Bees pollinate many of the crops we eat. Without them, apples, almonds and "
                "blueberries would become rare and expensive. Farmers rent hives each spring "
                "to keep their yields high, and cities now plant flowers along roads to "
                "feed wild bees."),
}
CASES = [(t, s, n) for t in CONTENT_TYPES for s in STYLES for n in LENGTHS]
# A line that only labels a setting, as the old templates' answers began.
LABEL = re.compile(r"^\W*(tone|style|length|voice|format)\W*:", re.I)


def spec_of(case: tuple[str, str, str]) -> PromptSpec:
    content_type, style, length = case
    return build_prompt(content_type, INPUTS[content_type], style=style, length=length)


@pytest.fixture(scope="module")
def raw_outputs() -> dict[tuple[str, str, str], str]:
    from marketplace.host.backends import LlamaCppBackend
    from marketplace.host.worker import ModelWorker, Work

    backend = LlamaCppBackend(parallel=4)
    worker = ModelWorker(backend, capacity=len(CASES) + 1)
    pieces: dict[tuple, list[str]] = {case: [] for case in CASES}
    done = {case: threading.Event() for case in CASES}
    try:
        for n, case in enumerate(CASES):
            request = GenerationRequest(model="smollm2-135m-instruct", prompt=spec_of(case).text,
                                        maxTokens=MAX_TOKENS, temperature=TEMPERATURE,
                                        seed=SECRET.hex())
            worker.submit(Work(request=request,
                               on_token=lambda token, c=case: pieces[c].append(token.text),
                               on_done=lambda error, c=case: done[c].set(),
                               key=sampling.job_key(SECRET, CHAIN_ID, n + 1)))
        for event in done.values():
            assert event.wait(600), "the engine never finished"
    finally:
        worker.stop()
        backend.llm.close()
    return {case: "".join(p) for case, p in pieces.items()}


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_no_template_line_appears_in_the_output(raw_outputs, case):
    spec = spec_of(case)
    text = spec.clean(raw_outputs[case])

    assert words(text), raw_outputs[case]  # cleaning never leaves nothing
    said = words(text)
    for instruction in spec.instructions:
        assert words(instruction) not in said, text
    template_lines = [line for line in spec.text.splitlines()
                      if line.strip() and INPUTS[case[0]] not in line]
    for line in template_lines:
        assert words(line) not in said, text
    for line in text.splitlines():
        assert not LABEL.match(line), text


def test_the_templates_themselves_keep_the_model_from_copying_them(raw_outputs):
    echoed = {case: spec_of(case).echoes(text) for case, text in raw_outputs.items()}
    echoed = {case: lines for case, lines in echoed.items() if lines}
    assert len(echoed) <= MAX_RAW_ECHOES, echoed

