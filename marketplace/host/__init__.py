"""The host node: serves a real language model on the marketplace. Runs without Django's
database; it shares only marketplace.protocol and marketplace.chain with the product."""

import os

# llama.cpp runs its CPU threads under OpenMP. With the default (active) wait policy,
# idle pool threads spin on the cores the model thread needs; on a shared 2-core machine
# that turned 7 ms decode steps into 20-2000 ms ones. Passive waiting kept them at 7 ms.
# libgomp reads this once, when llama.cpp's library is loaded, so it is set here before
# any backend imports llama_cpp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
