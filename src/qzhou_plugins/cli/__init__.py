"""The ``qzhou-plugins`` command: index documents into Chroma, query them, evaluate a model, benchmark.

The main job of a RAG embedder is "put my documents in a vector store and ask it something"; this makes
that one command each, offline on CPU with the demo model or on a GPU with QZhou-Embedding. Exit codes
follow the Unix habit: 0 success, 2 a usage error (found before any work starts), 1 a failure while
working; each error is one line on stderr, with the traceback only under ``--debug``.

The package follows the command line: ``parser`` builds it from one module per command group
(``indexing``: index, ``watching``: its ``--watch``;
``collection``: query; ``evaluate``; ``bench``; ``embed``, ``load``, ``serve``; ``where``:
the collection flags and client that index, query and load share),
``documents`` turns a path that leads to no documents into a usage error (reading and chunking are
:mod:`qzhou_plugins.documents`), ``errors`` holds the two kinds of failure. Frameworks are imported inside the
commands that need them (Chroma, the LangChain text splitter, pytrec_eval), so ``--help`` and the
commands that do not need them work without them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from ..documents import CHUNK_OVERLAP, CHUNK_SIZE, SUPPORTED_SUFFIXES, Chunk, read_chunks, source_name
from .bench import command_bench
from .collection import EXCERPT_CHARACTERS, command_query
from .documents import find_files
from .errors import DocumentError, UsageError, one_line
from .evaluate import command_eval
from .indexing import command_index
from .options import PROG
from .parser import build_parser
from .where import DEFAULT_PORT

__all__ = [
    "CHUNK_OVERLAP",
    "CHUNK_SIZE",
    "DEFAULT_PORT",
    "EXCERPT_CHARACTERS",
    "PROG",
    "SUPPORTED_SUFFIXES",
    "Chunk",
    "DocumentError",
    "UsageError",
    "build_parser",
    "command_bench",
    "command_eval",
    "command_index",
    "command_query",
    "find_files",
    "main",
    "read_chunks",
    "source_name",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script passes it to ``sys.exit``)."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments
    try:
        args = parser.parse_args(arguments)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else 0
    debug = debug or bool(getattr(args, "debug", False))
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    if debug:
        logging.getLogger("qzhou_plugins").setLevel(logging.DEBUG)
    return _run(args.handler, args, debug)


def _run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace, debug: bool) -> int:
    """The command's exit code; an error becomes one line on stderr (the traceback under --debug)."""
    try:
        return handler(args)
    except UsageError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
