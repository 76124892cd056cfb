"""Discovery's cache is bounded: model ids come from callers."""

import pytest

from marketplace.client import discovery
from marketplace.wallet import platform_chain

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_discovery_cache_keeps_only_the_most_recently_used_models(network, settings):
    settings.DISCOVERY_CACHE_MAX_MODELS = 2
    discovery.invalidate()
    chain = await platform_chain()
    for model in ("model-a", "model-b", "model-a", "model-c"):
        assert await discovery.candidates(model, chain=chain) == []  # nobody serves them
    assert list(discovery._cache) == ["model-a", "model-c"]  # b was the least recent
