"""Admin screens for the marketplace, one module per concern."""

from marketplace.admin import chain, channels, jobs, ops, trust  # noqa: F401
