"""How a result is named in the result caches: one normalization of the model, the prompt
and the parameters, so the writer and the gateway name the same request the same way."""

from __future__ import annotations

import hashlib
import json


def cache_key(*, model: str, prompt: str, max_tokens: int, temperature: float) -> str:
    """sha256 of the model (case and spaces ignored), the prompt with its whitespace
    collapsed, and the parameters."""
    normalized = {"model": model.strip().lower(), "prompt": " ".join(prompt.split()),
                  "max_tokens": max_tokens, "temperature": round(temperature, 3)}
    return hashlib.sha256(json.dumps(normalized, sort_keys=True).encode()).hexdigest()
