"""Marketplace models, one module per concern."""
