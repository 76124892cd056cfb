"""The gateway's services: what /v1 (marketplace.api) and batches call to run, price and
bill a request. See docs/gateway.md."""
