"""``serve``: one model over HTTP (OpenAI-compatible), the options being the server's own.

The flags and their defaults are defined once, in :mod:`qzhou_plugins.server.options` (which also
serves ``python -m qzhou_plugins.server``); FastAPI and uvicorn are imported only when serving starts.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..server.options import add_server_arguments, serve_from_arguments


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``serve`` to the sub-command set ``commands``."""
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="serve a model over HTTP (OpenAI-compatible /v1/embeddings, /v1/rerank)",
        description="Serve one embedding model over HTTP with cross-request batching, and with "
        "--rerank-model a cross-encoder or LLM reranker beside it on /v1/rerank (docs/serving.md). Needs "
        "the serve extra; --ray runs N replicas on Ray Serve (the ray extra).",
    )
    add_server_arguments(serve)
    serve.set_defaults(handler=command_serve)


def command_serve(args: argparse.Namespace) -> int:
    """Serve until stopped; the server says itself what went wrong (exit 1, or 2 for bad options)."""
    return serve_from_arguments(args)
