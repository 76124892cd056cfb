"""The host node: serves a real language model on the marketplace. Runs without Django's
database; it shares only marketplace.protocol and marketplace.chain with the product."""

import os

# llama.cpp runs its CPU threads under OpenMP, whose threads spin for a while (about
# 300,000 rounds by default) before sleeping, at barriers and between decode steps. On a
# shared 2-core machine that spinning took the core the model thread needed: single-token
# steps went from 6.5 ms to 10-20 ms and some batched steps took over 2 s. Sleeping at
# once (OMP_WAIT_POLICY=PASSIVE) fixed that but made every barrier inside a two-thread
# step a wake-up, so two threads ran slower than one. A short spin keeps both: measured
# here, four jobs at once ran at 1.4× the single-stream rate on an idle machine and at
# 0.88× with a busy-looping process on the other core (the same as passive waiting).
# libgomp reads this once, when llama.cpp's library is loaded, so it is set here before
# any backend imports llama_cpp.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")
