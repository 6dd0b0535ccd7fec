"""The server's command-line options: ``qzhou-plugins serve`` and ``python -m qzhou_plugins.server``.

The CLI adds these options to its ``serve`` subcommand with :func:`add_server_arguments` and runs
:func:`serve_from_arguments`: one definition of every flag and its default. Nothing here imports
FastAPI or uvicorn, so the CLI's parser builds without the ``serve`` extra; serving then says
which extra to install.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import get_args

from pydantic import ValidationError

from ..arguments import add_family_options, positive_int
from ..config import DEFAULT_MODEL, DType
from ..ray_cluster import LOCAL
from .settings import LogLevel, ServerSettings

API_KEY_ENVIRONMENT = "QZHOU_API_KEY"
_DEFAULTS = ServerSettings()


def add_server_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the server's options to ``parser`` (a subcommand's parser or a parser of its own)."""
    _add_model_arguments(parser.add_argument_group("model"))
    _add_network_arguments(parser.add_argument_group("network"))
    _add_limit_arguments(parser.add_argument_group("batching and limits"))
    _add_ray_arguments(parser.add_argument_group("replicas on Ray Serve (the ray extra)"))
    return parser


def _add_model_arguments(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--model", default=DEFAULT_MODEL, help="model folder or hub id to serve (default: %(default)s)")
    add(
        "--served-name",
        default=None,
        metavar="NAME",
        help="name clients send as `model` (default: --model as given); NAME-query embeds queries",
    )
    add(
        "--rerank-model",
        default=None,
        metavar="M",
        help="reranker model (a cross-encoder or LLM reranker, kind read from the checkpoint) served on "
        "/v1/rerank beside the embedder (default: none; the embedder reranks)",
    )
    add(
        "--rerank-served-name",
        default=None,
        metavar="NAME",
        help="name clients send as `model` for the reranker (default: --rerank-model as given)",
    )
    add(
        "--rerank-max-length",
        type=positive_int,
        default=None,
        metavar="T",
        help="tokens per (query, document) pair of the reranker (default: the reranker's own)",
    )
    add("--device", default=None, help="torch device (default: CUDA when present, else CPU)")
    add(
        "--dtype",
        default="auto",
        choices=list(get_args(DType)),
        help="weights dtype (default: bf16 on CUDA, fp32 on CPU)",
    )
    add("--max-length", type=positive_int, default=None, help="tokens per text (default: the model's)")
    add_family_options(group)


def _add_network_arguments(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add(
        "--host",
        default=_DEFAULTS.host,
        help="address to listen on (default: %(default)s: this machine only)",
    )
    add("--port", type=int, default=_DEFAULTS.port, help="port (default: %(default)s)")
    add(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' on /v1 routes (default: ${API_KEY_ENVIRONMENT})",
    )
    add(
        "--log-level",
        default=_DEFAULTS.log_level,
        choices=list(get_args(LogLevel)),
        help="(default: %(default)s)",
    )
    add("--access-log", action="store_true", help="log every request")


def _add_limit_arguments(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add(
        "--max-batch-tokens",
        type=positive_int,
        default=None,
        metavar="N",
        help="token budget of one forward pass and of one coalesced batch (default: the core's)",
    )
    add(
        "--batch-wait-ms",
        type=float,
        default=_DEFAULTS.batch_wait_ms,
        metavar="MS",
        help="how long a request may wait for company in its forward pass (default: %(default)s)",
    )
    add(
        "--no-batching",
        dest="batching",
        action="store_false",
        help="one encode call per request, no coalescing (the benchmark's baseline)",
    )
    for flag, what in (
        ("--max-queue", "texts that may wait for the model before requests get 503"),
        ("--max-inputs", "texts per request, over it 413"),
        ("--max-request-tokens", "tokens per request, instructions included, over it 413"),
        ("--max-body-bytes", "bytes of one request body, over it 413 before the body is read"),
    ):
        default = getattr(_DEFAULTS, flag[2:].replace("-", "_"))
        add(flag, type=positive_int, default=default, metavar="N", help=f"{what} (default: %(default)s)")


def _add_ray_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="serve on Ray Serve, one model per replica, Serve's proxy on --host/--port: no ADDRESS "
        "starts a local cluster; 'auto' or ray://host:10001 joins one (write --ray=ADDRESS)",
    )
    group.add_argument(
        "--replicas",
        type=positive_int,
        default=None,
        metavar="N",
        help="copies of the model with --ray, one GPU each on a GPU cluster (default: 1)",
    )


def settings_from_arguments(args: argparse.Namespace) -> ServerSettings:
    """The settings named by parsed arguments; the key falls back to $QZHOU_API_KEY."""
    return ServerSettings(
        model=args.model,
        served_name=args.served_name,
        rerank_model=args.rerank_model,
        rerank_served_name=args.rerank_served_name,
        rerank_max_length=args.rerank_max_length,
        host=args.host,
        port=args.port,
        api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENVIRONMENT) or None,
        device=args.device,
        dtype=args.dtype,
        max_length=args.max_length,
        family=args.family,
        dimensions=args.dimensions,
        max_batch_tokens=args.max_batch_tokens,
        max_queue=args.max_queue,
        max_inputs=args.max_inputs,
        max_request_tokens=args.max_request_tokens,
        max_body_bytes=args.max_body_bytes,
        batch_wait_ms=args.batch_wait_ms,
        batching=args.batching,
        log_level=args.log_level,
        access_log=args.access_log,
    )


def serve_from_arguments(args: argparse.Namespace) -> int:
    """Serve as the parsed arguments say: 0 after a clean stop, 1 on failure, 2 for bad options.

    With ``--ray`` the same app runs in each replica of a Ray Serve deployment (:mod:`.ray_serve`).
    """
    try:
        settings = settings_from_arguments(args)
        settings.encoder_config()  # the device and the rest are checked before anything loads
        settings.reranker_config()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in error.errors()
        )
        print(f"error: {problems}", file=sys.stderr)
        return 2
    if args.replicas is not None and args.ray is None:
        print("error: --replicas needs --ray: one process serves one copy of the model", file=sys.stderr)
        return 2
    try:
        if args.ray is not None:
            from .ray_serve import serve_on_ray

            return serve_on_ray(settings, args.ray, args.replicas or 1)
        from .app import run_server
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return run_server(settings)


def main(argv: list[str] | None = None) -> int:
    """``python -m qzhou_plugins.server``: the same options as ``qzhou-plugins serve``."""
    parser = argparse.ArgumentParser(
        prog="python -m qzhou_plugins.server",
        description="Serve one embedding model (and optionally a reranker) over HTTP: OpenAI-compatible "
        "/v1/embeddings, /v1/rerank, /v1/models, /health and /metrics, with cross-request batching "
        "(docs/serving.md).",
    )
    add_server_arguments(parser)
    return serve_from_arguments(parser.parse_args(argv))
