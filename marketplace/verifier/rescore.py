"""Re-scoring prompt + output with the pinned model: the logits at every output position,
from one forward pass over the tokens the host reported.

A Rescorer owns a llama.cpp context and must be used from one thread only (the verifier
worker's). It keeps the tokens of the last pass in its KV cache: the next job reuses the
longest common prefix (the chat template's system turn, the same prompt continued), so
only the rest is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import _internals

from marketplace.protocol import GenerationRequest
from marketplace.weights import PromptFormat, common_prefix

# Positions whose logits one decode call returns: bounds the logits buffer (each position
# holds the whole vocabulary: 49,152 floats for SmolLM2).
CHUNK = 256


class Rescorer:
    def __init__(self, model_path: Path, *, n_ctx: int = 4096, n_threads: int | None = None):
        from llama_cpp import Llama

        self.model_path = Path(model_path)
        # vocab_only would do for tokenizing; the weights are loaded once, for the context.
        self.llm = Llama(model_path=str(self.model_path), n_ctx=256, n_threads=n_threads,
                         verbose=False)
        self.prompt_format = PromptFormat(self.llm)
        self.vocab = self.llm._model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.eog = {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)}
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx
        params.n_ubatch = 512
        params.n_seq_max = 1
        params.n_threads = self.llm.context_params.n_threads
        params.n_threads_batch = self.llm.context_params.n_threads_batch
        self.n_ctx = n_ctx
        self.ctx = _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
        self.batch = _internals.LlamaBatch(n_tokens=n_ctx, embd=0, n_seq_max=1, verbose=False)
        self.cached: list[int] = []
        self.evaluated = 0  # tokens decoded, for the figures

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        return self.prompt_format.tokens(request)

    def logits(self, prompt: list[int], output: list[int]) -> Iterator[np.ndarray]:
        """The logits the model gives after prompt + output[:i], for i = 0 .. len(output):
        the distribution each output token was drawn from, and the one after the last.

        Each array is a view valid until the next one is asked for."""
        tokens = prompt + output
        if len(tokens) > self.n_ctx:
            raise ValueError(f"{len(tokens)} tokens; the verifier's context holds {self.n_ctx}")
        first = len(prompt) - 1  # the position whose logits choose output[0]
        keep = min(common_prefix(self.cached, tokens), first)
        memory = self.ctx.memory
        if not llama_cpp.llama_memory_seq_rm(memory, 0, keep, -1):
            llama_cpp.llama_memory_seq_rm(memory, 0, -1, -1)
            keep = 0
        self.cached = tokens[:keep]
        position = keep
        # The prompt up to `first` needs no logits: decode it in one go.
        while position < first:
            end = min(first, position + self.n_ctx)
            self._decode(tokens, position, end, outputs_from=end)
            position = end
        while position < len(tokens):
            end = min(len(tokens), position + CHUNK)
            self._decode(tokens, position, end, outputs_from=position)
            for i in range(end - position):
                yield np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx.ctx, i),
                                            shape=(self.n_vocab,))
            position = end

    def _decode(self, tokens: list[int], start: int, end: int, *, outputs_from: int) -> None:
        batch = self.batch.batch
        for n, pos in enumerate(range(start, end)):
            batch.token[n] = tokens[pos]
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = 0
            batch.logits[n] = pos >= outputs_from
        batch.n_tokens = end - start
        status = llama_cpp.llama_decode(self.ctx.ctx, batch)
        if status != 0:
            llama_cpp.llama_memory_seq_rm(self.ctx.memory, 0, -1, -1)
            self.cached = []
            raise RuntimeError(f"llama_decode failed ({status})")
        self.cached.extend(tokens[start:end])
        self.evaluated += end - start

    def close(self) -> None:
        self.batch.close()
        self.ctx.close()
        self.llm.close()
