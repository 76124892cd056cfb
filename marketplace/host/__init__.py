"""The host node: serves a real language model on the marketplace. Runs without Django's
database; it shares only marketplace.protocol and marketplace.chain with the product."""
