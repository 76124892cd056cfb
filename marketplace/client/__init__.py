"""The client side of the marketplace: discover, rank, negotiate, pay, stream, verify."""
