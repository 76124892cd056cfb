"""How a result is named in the result caches: one normalization of the model, the prompt
and the parameters, so the writer and the gateway name the same request the same way.

Every key names its account: a result is served again only to the account that paid for
it. A cache shared across accounts would tell anyone who sends a prompt whether somebody
else asked it (and hand them that person's answer), however the hit is dressed up: a free,
instant answer is the tell. So no key is shared.
"""

from __future__ import annotations

import hashlib
import json


def cache_key(*, owner_id: int, model: str, prompt: str, max_tokens: int,
              temperature: float) -> str:
    """sha256 of the owning account, the model (case and spaces ignored), the prompt with
    its whitespace collapsed, and the parameters."""
    normalized = {"owner": int(owner_id), "model": model.strip().lower(),
                  "prompt": " ".join(prompt.split()), "max_tokens": max_tokens,
                  "temperature": round(temperature, 3)}
    return hashlib.sha256(json.dumps(normalized, sort_keys=True).encode()).hexdigest()
