"""Admin screens for the marketplace, one module per concern."""
