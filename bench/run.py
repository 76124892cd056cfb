"""Runs every benchmark in bench/ (or those named on the command line) and reports.

Each benchmark is a module `bench/bench_<name>.py` (run as `python -m bench.bench_<name>`)
that prints `name: value unit` lines and measures its own baseline in the same run, so
figures compare like with like.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main(argv: list[str]) -> int:
    wanted = set(argv)
    scripts = sorted(HERE.glob("bench_*.py"))
    if wanted:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
        if not scripts:
            print(f"no benchmark named {', '.join(sorted(wanted))}", file=sys.stderr)
            return 2
    failed = []
    for script in scripts:
        print(f"== {script.stem.removeprefix('bench_')}", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", f"bench.{script.stem}"], cwd=ROOT)
        print(f"   ({time.monotonic() - started:.1f} s)", flush=True)
        if result.returncode != 0:
            failed.append(script.stem)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
