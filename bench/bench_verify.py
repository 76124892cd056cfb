"""The verifier against honest and dishonest hosts, on the bundled model.

Responses come from the host's own engine (batched decoding of concurrent jobs, each with
its committed sampling key) and are re-scored by the verifier (marketplace.verifier) as the
client would: honest at temperatures 0 and 0.7; `junk` (random tokens with made-up
log-probabilities); `wrong temperature` (the committed randomness, another temperature);
`requantized` (the shipped GGUF requantized to Q2_K by llama.cpp's quantizer, serving the
same model id). Also the CPU the verifier spends against the CPU the host spent on the
same honest responses.

BENCH_VERIFY_HONEST sets how many honest responses (default 500), BENCH_VERIFY_HOSTILE how
many of each dishonest kind (default 100).
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import report
from marketplace import sampling
from marketplace.host.backends import LlamaCppBackend
from marketplace.host.behaviours import wrong_temperature
from marketplace.host.worker import ModelWorker, Token, Work
from marketplace.protocol import GenerationRequest
from marketplace.verifier.rescore import Rescorer
from marketplace.verifier.scoring import Reported, Thresholds, score
from marketplace.weights import bundled_model_path, requantize, token_pieces

MAX_TOKENS = 64
CHAIN_ID = 31337
TOPICS = ["the colour blue", "rain", "sleeping well", "a team meeting", "exercise",
          "reversing a string in Python", "coffee", "the history of the bicycle",
          "keeping a garden", "learning a language", "the ocean", "saving money"]
ASKS = ["Write a short paragraph about {}.", "Explain {} to a child.",
        "Give three tips about {}.", "Write a haiku about {}."]


def prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(ASKS).format(rng.choice(TOPICS)) for _ in range(n)]


def generate(backend, requests: list[GenerationRequest], keys: list[int],
             temperatures: list[float] | None = None) -> tuple[list[list[Token]], float]:
    """Every request through the engine at once (4 decoded together), and the CPU spent."""
    worker = ModelWorker(backend, capacity=len(requests) + 1)
    outputs: list[list[Token]] = [[] for _ in requests]
    done = [threading.Event() for _ in requests]
    started = time.process_time()
    for i, request in enumerate(requests):
        if temperatures is not None:  # the host samples at a temperature of its own
            request = request.model_copy(update={"temperature": temperatures[i]})
        worker.submit(Work(request=request, on_token=outputs[i].append,
                           on_done=lambda error, e=done[i]: e.set(), key=keys[i]))
    for event in done:
        event.wait(600)
    cpu = time.process_time() - started
    worker.stop()
    return outputs, cpu


def junk(n_vocab: int, eog: set[int], pieces: list[bytes], count: int,
         rng: random.Random) -> list[Token]:
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tokens = []
    for _ in range(count):
        token = rng.randrange(n_vocab)
        while token in eog:
            token = rng.randrange(n_vocab)
        tokens.append(Token(decoder.decode(pieces[token]), token, -rng.uniform(0.05, 3.0)))
    return tokens


def verify(rescorer: Rescorer, pieces, request: GenerationRequest, key: int,
           tokens: list[Token], thresholds: Thresholds):
    ids = [t.id for t in tokens]
    return score(logits=rescorer.logits(rescorer.prompt_tokens(request), ids),
                 reported=[Reported(t.id, t.logprob, t.text) for t in tokens],
                 temperature=request.temperature, key=key, pieces=pieces,
                 eog=rescorer.eog, complete=len(tokens) < request.max_tokens,
                 thresholds=thresholds)


def batch(n: int, seed: int, temperatures: list[float]):
    texts = prompts(n, seed)
    requests = [GenerationRequest(model="bench", prompt=p, maxTokens=MAX_TOKENS,
                                  temperature=temperatures[i % len(temperatures)])
                for i, p in enumerate(texts)]
    keys = [sampling.job_key(bytes.fromhex(r.seed), CHAIN_ID, seed * 100_000 + i)
            for i, r in enumerate(requests)]
    return requests, keys


def main() -> None:
    honest_n = int(os.environ.get("BENCH_VERIFY_HONEST", "500"))
    hostile_n = int(os.environ.get("BENCH_VERIFY_HOSTILE", "100"))
    thresholds = Thresholds()
    host = LlamaCppBackend(parallel=4)
    rescorer = Rescorer(bundled_model_path())
    pieces = token_pieces(rescorer.vocab)

    requests, keys = batch(honest_n, 1, [0.0, 0.7])
    outputs, host_cpu = generate(host, requests, keys)
    started = time.process_time()
    findings = [verify(rescorer, pieces, r, k, t, thresholds)
                for r, k, t in zip(requests, keys, outputs, strict=True)]
    verify_cpu = time.process_time() - started
    false_positives = [f for f in findings if not f.passed]
    means = np.array([f.mean_logprob_error for f in findings])
    rates = np.array([f.mismatch_rate for f in findings])
    report("verify honest responses", len(findings), "")
    report("verify honest tokens", sum(f.positions for f in findings), "")
    report("verify honest mean logprob error p99", round(float(np.percentile(means, 99)), 4),
           f"nats (max {means.max():.4f}; a result fails above {thresholds.logprob_mean})")
    report("verify honest mismatch rate p99", round(float(np.percentile(rates, 99)), 4),
           f"(max {rates.max():.4f}; 64 tokens fail at {thresholds.mismatch_limit(64)} of them)")
    report("verify honest clear misses max", max(f.clear_misses for f in findings),
           f"(a result of 64 tokens fails at {thresholds.clear_miss_limit(64)})")
    report("verify false positive rate", round(len(false_positives) / len(findings), 4),
           f"({len(false_positives)} of {len(findings)})")
    for f in false_positives[:5]:
        print(f"   false positive: {f.reason}")
    report("verify cpu ratio", round(verify_cpu / host_cpu, 3),
           f"(verifier {verify_cpu:.1f} s ÷ host {host_cpu:.1f} s of CPU)")

    rng = random.Random(7)
    requests, keys = batch(hostile_n, 2, [0.0, 0.7])
    caught = sum(not verify(rescorer, pieces, r, k,
                            junk(rescorer.n_vocab, rescorer.eog, pieces, MAX_TOKENS, rng),
                            thresholds).passed for r, k in zip(requests, keys, strict=True))
    report("verify detection rate junk", round(caught / hostile_n, 4),
           f"({caught} of {hostile_n})")

    requests, keys = batch(hostile_n, 3, [0.0, 0.7])
    wrong = [wrong_temperature(r.temperature) for r in requests]
    outputs, _ = generate(host, requests, keys, temperatures=wrong)
    # What an honest host would have sent for the same jobs: where the wrong temperature
    # changed no token, the response is the honest one and there is nothing to catch.
    honest_outputs, _ = generate(host, requests, keys)
    caught = [not verify(rescorer, pieces, r, k, t, thresholds).passed
              for r, k, t in zip(requests, keys, outputs, strict=True)]
    changed = [[t.id for t in a] != [t.id for t in b]
               for a, b in zip(outputs, honest_outputs, strict=True)]
    caught_changed = sum(c for c, d in zip(caught, changed, strict=True) if d)
    report("verify detection rate wrong temperature", round(sum(caught) / hostile_n, 4),
           f"({sum(caught)} of {hostile_n}; 0 -> 0.7 and 0.7 -> 1.2)")
    report("verify detection rate wrong temperature where it changed a token",
           round(caught_changed / max(sum(changed), 1), 4),
           f"({caught_changed} of {sum(changed)})")

    with tempfile.TemporaryDirectory() as tmp:
        cheap = LlamaCppBackend(requantize(bundled_model_path(), Path(tmp) / "q2k.gguf"),
                                parallel=4)
        requests, keys = batch(hostile_n, 4, [0.0, 0.7])
        outputs, _ = generate(cheap, requests, keys)
    found = [verify(rescorer, pieces, r, k, t, thresholds)
             for r, k, t in zip(requests, keys, outputs, strict=True)]
    results = [f.passed for f in found]
    report("verify requantized mean logprob error p1",
           round(float(np.percentile([f.mean_logprob_error for f in found], 1)), 4), "nats")
    # Jobs a requantized host serves before one fails: runs of passes, then the catch.
    runs, streak = [], 0
    for passed in results:
        streak += 1
        if not passed:
            runs.append(streak)
            streak = 0
    report("verify detection rate requantized", round(results.count(False) / hostile_n, 4),
           f"({results.count(False)} of {hostile_n})")
    report("verify jobs to catch requantized",
           int(np.percentile(runs, 99)) if runs else "never", "(99th percentile)")


if __name__ == "__main__":
    main()
