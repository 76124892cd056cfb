"""Model backends behind one small interface: stream the tokens for a request.

`stream` runs on the host's model thread (see worker.py), never on the event loop, and
checks `cancel` between tokens so a cancelled or abandoned job stops generating.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from marketplace.protocol import GenerationRequest
from marketplace.weights import SMOLLM2_ID, PromptFormat, bundled_model_path

__all__ = ["SMOLLM2_ID", "Backend", "LlamaCppBackend", "OpenAICompatibleBackend",
           "bundled_model_path"]

class Backend(Protocol):
    name: str
    model_id: str

    def stream(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[str]:
        """Yield the text of each generated token, in order."""
        ...


class LlamaCppBackend:
    """llama.cpp through llama-cpp-python, with the model's own chat template. The host
    serves it through `open_engine` (several jobs decoded together); `stream` is the plain
    llama-cpp-python path, one request at a time."""

    name = "llama.cpp"

    def __init__(self, model_path: Path | None = None, *, model_id: str = SMOLLM2_ID,
                 n_ctx: int = 2048, n_threads: int | None = None, seed: int = 1234,
                 parallel: int = 4):
        from llama_cpp import Llama

        self.model_id = model_id
        self.n_ctx = n_ctx
        self.parallel = parallel
        self.model_path = Path(model_path or bundled_model_path())
        # `seed` only seeds llama-cpp-python's own sampler (`stream`); the engine samples
        # with each job's key (marketplace.sampling).
        self.llm = Llama(model_path=str(self.model_path), n_ctx=n_ctx, n_threads=n_threads,
                         seed=seed, verbose=False)
        self.prompt_format = PromptFormat(self.llm)

    def prompt_text(self, request: GenerationRequest) -> tuple[str, list[str]]:
        return self.prompt_format.text(request)

    def open_engine(self):
        """The batching engine the model thread serves jobs with."""
        from marketplace.host.engine import BatchEngine

        return BatchEngine(self.llm, parallel=self.parallel, n_ctx_per_seq=self.n_ctx,
                           formatter=lambda r: self.prompt_text(r)[0])

    def stream(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[str]:
        prompt, stop = self.prompt_text(request)
        chunks = self.llm.create_completion(
            prompt, max_tokens=request.max_tokens, temperature=request.temperature,
            stop=stop or None, stream=True,
        )
        try:
            for chunk in chunks:
                if cancel.is_set():
                    break
                text = chunk["choices"][0]["text"]
                if text:
                    yield text
        finally:
            chunks.close()


class OpenAICompatibleBackend:
    """Any server speaking OpenAI's chat completions API with streaming (vLLM, llama.cpp's
    server, Ollama). A continuation is sent as an assistant message holding the prefix."""

    name = "openai-compatible"

    def __init__(self, base_url: str, *, model_id: str, upstream_model: str | None = None,
                 api_key: str | None = None, timeout_s: float = 120.0):
        import httpx

        self.model_id = model_id
        self.upstream_model = upstream_model or model_id
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                 timeout=timeout_s)

    def stream(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[str]:
        messages = [{"role": "user", "content": request.prompt}]
        if request.prefix:
            messages.append({"role": "assistant", "content": request.prefix})
        body = {"model": self.upstream_model, "messages": messages, "stream": True,
                "max_tokens": request.max_tokens, "temperature": request.temperature}
        with self.http.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if cancel.is_set():
                    break
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                choices = json.loads(payload).get("choices") or []
                text = (choices[0].get("delta") or {}).get("content") if choices else None
                if text:
                    yield text

    def close(self) -> None:
        self.http.close()
