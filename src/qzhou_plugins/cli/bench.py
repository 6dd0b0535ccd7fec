"""``bench``: the encode benchmark of a source checkout, run with the arguments given after ``--``.

The benchmark script is part of the repository, not of the installed package, so the command
looks for it in the working directory and next to the package's source tree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from .options import PROG

SCRIPT = Path("benchmarks") / "bench_encode.py"


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``bench`` to the sub-command set ``commands`` (every later argument is the benchmark's)."""
    bench = commands.add_parser(
        "bench",
        help="run the encode benchmark (benchmarks/bench_encode.py of a source checkout)",
        description="Run benchmarks/bench_encode.py; every argument after 'bench' is passed to it "
        f"(`{PROG} bench -- --help` shows its options).",
    )
    bench.add_argument("arguments", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    bench.set_defaults(handler=command_bench)


def command_bench(args: argparse.Namespace) -> int:
    """Run ``benchmarks/bench_encode.py`` of the source checkout with the remaining arguments."""
    # src/qzhou_plugins/cli/bench.py: the checkout is three folders up from this one.
    candidates = [Path.cwd() / SCRIPT, Path(__file__).resolve().parents[3] / SCRIPT]
    script = next((candidate for candidate in candidates if candidate.is_file()), None)
    if script is None:
        raise ValueError(
            "the encode benchmark (benchmarks/bench_encode.py) is part of the source repository, not of "
            "the installed package: run this from a clone of qzhou-plugins"
        )
    arguments = args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments
    return subprocess.call([sys.executable, str(script), *arguments])
