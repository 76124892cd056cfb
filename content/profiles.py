"""The model, token budget and temperature a request gets, from the admin's profiles."""

from __future__ import annotations

from dataclasses import dataclass

from content.models import GenerationProfile
from content.prompts import build_prompt


@dataclass(frozen=True)
class Settings:
    model: str
    max_tokens: int
    temperature: float


def profile_for(content_type: str, length: str, *, model: str | None = None,
                max_tokens: int | None = None, temperature: float | None = None) -> Settings:
    profile = GenerationProfile.objects.filter(content_type=content_type, length=length).first()
    base = Settings(profile.model, profile.max_tokens, profile.temperature) if profile else \
        Settings("smollm2-135m-instruct", build_prompt(content_type, "x", length=length)
                 .max_tokens, 0.7)
    return Settings(model or base.model, max_tokens or base.max_tokens,
                    base.temperature if temperature is None else temperature)
