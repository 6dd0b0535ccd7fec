"""Start-up: ``import qzhou_plugins`` and ``qzhou-plugins --help`` against what they used to cost.

Each figure is a fresh interpreter, timed from outside (the median of ``--runs``), so it includes
Python's own start-up, as a user sees it. The baselines, in the same run: a bare interpreter
(``python -c pass``: the floor), and importing the local runtime (``qzhou_plugins.backends.local``
with its torch and transformers: what ``import qzhou_plugins`` and ``--help`` cost before their
imports were made lazy). Targets: import under 0.5 s, every ``--help`` under 1 s.

    .venv/bin/python benchmarks/bench_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = ["index", "query", "eval", "embed", "load", "serve", "bench"]


def seconds(arguments: list[str], runs: int) -> float:
    """The median wall time of ``runs`` fresh processes running ``arguments`` (after one warm-up)."""
    times = []
    for attempt in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(arguments, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if attempt:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    python = sys.executable
    cli = [python, "-m", "qzhou_plugins.cli"]
    floor = seconds([python, "-c", "pass"], args.runs)
    eager = seconds([python, "-c", "import qzhou_plugins.backends.local.runner"], args.runs)
    rows = [
        ("python -c pass (the floor)", floor),
        ("import the torch runtime (the old import)", eager),
        ("import qzhou_plugins", seconds([python, "-c", "import qzhou_plugins"], args.runs)),
        ("qzhou-plugins --help", seconds([*cli, "--help"], args.runs)),
        *((f"qzhou-plugins {c} --help", seconds([*cli, c, "--help"], args.runs)) for c in COMMANDS),
    ]
    print(f"median of {args.runs} fresh processes each")
    for name, value in rows:
        print(f"  {name:<44} {value:6.3f} s   {eager / value:5.1f}x faster than the old import")


if __name__ == "__main__":
    main()
