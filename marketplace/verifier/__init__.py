"""The verifier: re-scores what a host generated with the same GGUF file, and says whether
each token is the one the job's committed randomness selects (docs/trust.md)."""
