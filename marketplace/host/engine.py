"""Continuous batching on llama.cpp: several generations share one context and advance
together, one `llama_decode` per step holding the next token of every running sequence
and the prompt of any that just arrived.

Every client starts at once instead of queueing behind the others, and steps with several
tokens can use every core while single-token steps keep llama-cpp-python's one thread
(see ThreadTuner). Each sequence has its own id in the KV cache (a slot); a slot keeps
its tokens after a job ends, and a new prompt reuses the longest prefix any slot holds
(the chat template's system turn, a resumed continuation), so only the rest is evaluated.

Tokens are chosen by marketplace.sampling from the logits llama.cpp computes, with the
job's sampling key, so a verifier holding the same GGUF file can check each one; every
token is reported with its id and log-probability.

Only the model thread calls into an engine (see worker.py).
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field

import llama_cpp
import numpy as np
from llama_cpp import _internals

from marketplace import sampling
from marketplace.host.worker import Token, Work
from marketplace.weights import common_prefix, token_decoder, token_pieces


@dataclass
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV this slot holds
    work: Work | None = None
    feed: list[int] = field(default_factory=list)  # tokens to decode in the next step
    decoder: codecs.IncrementalDecoder | None = None
    generated: int = 0
    budget: int = 0
    logits_at: int = -1


class BatchEngine:
    def __init__(self, llm, *, parallel: int = 4, n_ctx_per_seq: int = 2048,
                 formatter=None):
        self.llm = llm
        self.format = formatter
        self.parallel = parallel
        self.n_ctx_per_seq = n_ctx_per_seq
        self.vocab = llm._model.vocab
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx_per_seq * parallel
        params.n_batch = params.n_ctx
        params.n_ubatch = 512
        params.n_seq_max = parallel
        # One KV buffer shared by all slots: measured on 2 cores, four sequences decode at
        # about 280 tokens/s against 215 with a stream per slot. It cannot overflow: no slot
        # ever holds more than n_ctx_per_seq cells (see `start`).
        params.kv_unified = True
        # The same thread counts as the Llama object: one thread for single-token steps,
        # all cores for steps with several tokens (llama.cpp picks by batch size).
        params.n_threads = llm.context_params.n_threads
        params.n_threads_batch = llm.context_params.n_threads_batch
        self.threads = ThreadTuner(params.n_threads, params.n_threads_batch)
        self._batch_threads = params.n_threads_batch
        self.ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self.batch = _internals.LlamaBatch(n_tokens=params.n_ctx, embd=0, n_seq_max=1,
                                           verbose=False)
        self.slots = [Slot(seq_id=i) for i in range(parallel)]
        # Every token's bytes and end-of-generation flag, looked up once: per token the
        # model thread then makes a single call into llama.cpp (the sampler), and each
        # call is a point where it may wait for the GIL behind the event loop.
        n_vocab = self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self._pieces = token_pieces(self.vocab)
        self._eog = {t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)}

    @property
    def running(self) -> int:
        return sum(1 for s in self.slots if s.work is not None)

    # ---- admission ------------------------------------------------------------------

    def start(self, work: Work) -> None:
        """Take a job into a free slot; its prompt is evaluated in the next step."""
        prompt = self.format(work.request)
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        budget = min(work.request.max_tokens, self.n_ctx_per_seq - len(tokens))
        if budget <= 0:
            work.on_done(f"the prompt is {len(tokens)} tokens; the context holds "
                         f"{self.n_ctx_per_seq}")
            return
        memory = self.ctx.memory
        slot = max((s for s in self.slots if s.work is None),
                   key=lambda s: common_prefix(s.cached, tokens))
        # At least the last prompt token is decoded again: its logits start the answer.
        keep = min(common_prefix(slot.cached, tokens), len(tokens) - 1)
        donor = max(self.slots, key=lambda s: common_prefix(s.cached, tokens))
        shared = min(common_prefix(donor.cached, tokens), len(tokens) - 1)
        if shared > keep:
            # Another slot (running or not) already holds a longer prefix, typically the
            # chat template's system turn: in a unified cache, copying it only tags the
            # same cells with this slot's sequence id.
            llama_cpp.llama_memory_seq_rm(memory, slot.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_cp(memory, donor.seq_id, slot.seq_id, 0, shared)
            keep = shared
        elif not llama_cpp.llama_memory_seq_rm(memory, slot.seq_id, keep, -1):
            llama_cpp.llama_memory_seq_rm(memory, slot.seq_id, -1, -1)
            keep = 0
        slot.cached = tokens[:keep]
        slot.feed = tokens[keep:]
        slot.work = work
        slot.generated = 0
        slot.budget = budget
        slot.decoder = token_decoder()

    # ---- decoding -------------------------------------------------------------------

    def step(self) -> None:
        """One decode for every running sequence; each then gets its next token."""
        for slot in self.slots:
            if slot.work is not None and slot.work.cancel.is_set():
                self._finish(slot, None)
        active = [s for s in self.slots if s.work is not None]
        if not active:
            return
        batch = self.batch.batch
        n = 0
        for slot in active:
            pos = len(slot.cached)
            for i, token in enumerate(slot.feed):
                batch.token[n] = token
                batch.pos[n] = pos + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = slot.seq_id
                batch.logits[n] = False
                n += 1
            batch.logits[n - 1] = True
            slot.logits_at = n - 1
        batch.n_tokens = n
        # Only steps of one new token per sequence are comparable from step to step.
        decoding = n > 1 and n == len(active)
        if decoding:
            threads = self.threads.choose()
            if threads != self._batch_threads:
                llama_cpp.llama_set_n_threads(self.ctx.ctx, self.threads.n_threads, threads)
                self._batch_threads = threads
        started = time.perf_counter()
        status = llama_cpp.llama_decode(self.ctx.ctx, batch)
        if decoding and status == 0:
            self.threads.learn((time.perf_counter() - started) / n)
        if status != 0:
            # The cache may hold part of this batch: drop every running sequence's state.
            for slot in active:
                llama_cpp.llama_memory_seq_rm(self.ctx.memory, slot.seq_id, -1, -1)
                slot.cached = []
                self._finish(slot, f"llama_decode failed ({status})")
            return
        for slot in active:
            slot.cached.extend(slot.feed)
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(self.ctx.ctx, slot.logits_at),
                shape=(self.n_vocab,))
            token = sampling.choose(logits, slot.work.request.temperature, slot.work.key,
                                    slot.generated)
            if token in self._eog:
                self._finish(slot, None)
                continue
            logprob = sampling.log_softmax_at(logits, token)
            slot.generated += 1
            # Every token is reported, even one whose text is empty (part of a character).
            slot.work.on_token(Token(slot.decoder.decode(self._pieces[token]), token,
                                     round(logprob, 6)))
            if slot.generated >= slot.budget:
                self._finish(slot, None)
            else:
                slot.feed = [token]

    def _finish(self, slot: Slot, error: str | None) -> None:
        # A character left incomplete by the last token is dropped, not replaced: the text
        # of a job is what its tokens' incremental decoding gave (token_decoder).
        work, slot.work = slot.work, None
        slot.decoder = None
        slot.feed = []
        work.on_done(error)

    def fail_all(self, error: str) -> None:
        for slot in self.slots:
            if slot.work is not None:
                self._finish(slot, error)

    def close(self) -> None:
        self.fail_all("the host is stopping")
        self.batch.close()
        self.ctx.close()


class ThreadTuner:
    """Picks the thread count for multi-token steps from their measured cost per token.

    Measured on 2 cores: with the other core free, four tokens on two threads cost 5.4 ms
    a token against 6.7 ms on one; with another process busy on that core, 11-30 ms on two
    threads against 7.6 ms on one (the OpenMP threads wait on each other). The right choice
    depends on the machine's load at the moment, so it is measured: the cheaper option is
    used, and the other is retried now and then.
    """

    EXPLORE_EVERY = 64
    ALPHA = 0.2

    def __init__(self, n_threads: int, n_threads_batch: int):
        self.n_threads = n_threads
        self.options = sorted({1, n_threads_batch})
        self.cost: dict[int, float | None] = dict.fromkeys(self.options)
        self.current = n_threads_batch
        self._steps = 0

    def choose(self) -> int:
        """The thread count for the next multi-token step."""
        self._steps += 1
        untried = [t for t in self.options if self.cost[t] is None]
        if untried:
            self.current = untried[0]
        else:
            ranked = sorted(self.options, key=lambda t: self.cost[t])
            explore = len(ranked) > 1 and self._steps % self.EXPLORE_EVERY == 0
            self.current = ranked[1] if explore else ranked[0]
        return self.current

    def learn(self, seconds_per_token: float) -> None:
        old = self.cost[self.current]
        self.cost[self.current] = seconds_per_token if old is None else (
            old + self.ALPHA * (seconds_per_token - old))
