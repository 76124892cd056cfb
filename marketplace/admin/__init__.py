"""Admin screens for the marketplace, one module per concern."""

from marketplace.admin import batches, chain, gateway, jobs, ops  # noqa: F401
