"""``export gguf``: a model as one GGUF file for llama.cpp runtimes (llama-server, Ollama, LM Studio).

The exporter (and the ``gguf`` package it writes with) is imported when the command runs, so that
``--help`` stays light.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..arguments import positive
from ..backends.llama_cpp.keys import EXPORT_TYPES
from .options import PROG, CommandParser


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``export gguf`` to the sub-command set ``commands``."""
    export = commands.add_parser(
        "export",
        help="write a model in another format (gguf: for llama.cpp, Ollama, LM Studio)",
        description="Write a model in another format. Formats: gguf.",
    )
    formats = export.add_subparsers(
        dest="format", metavar="FORMAT", required=True, parser_class=CommandParser
    )
    gguf = formats.add_parser(
        "gguf",
        parents=[common],
        help="one GGUF file that llama.cpp runtimes embed with correctly (bidirectional QZhou included)",
        description="Export MODEL (a checkpoint folder, a hub id or all-MiniLM-L6-v2) to OUT.gguf: Qwen2 for "
        "QZhou with its attention marked non-causal, BERT for MiniLM-style encoders, mean pooling, the "
        "instruction format and the source model recorded (docs/gguf.md). f16 keeps the vectors "
        "interchangeable with the torch encoder's; q8_0 and q4_k_m are smaller and differ (measured in "
        f"docs/performance.md). `{PROG} query --model OUT.gguf` and every adapter then run it on llama.cpp.",
    )
    gguf.add_argument("model", help="checkpoint folder, hub id, or all-MiniLM-L6-v2")
    gguf.add_argument("out", help="the .gguf file to write")
    gguf.add_argument(
        "--type",
        dest="gguf_type",
        choices=EXPORT_TYPES,
        default="f16",
        help="weights type (default f16; q4_k_m needs the llama extra: llama.cpp's own quantizer)",
    )
    from ..families import known_families

    gguf.add_argument(
        "--family",
        default=None,
        choices=list(known_families()),
        help="the embedder's model family, whose attention, pooling and end token the file is written "
        "with (default: recognised from the checkpoint; checked against it as family= is)",
    )
    gguf.add_argument(
        "--threads", type=positive(), default=None, help="threads of the q4_k_m quantizer (default: all)"
    )
    gguf.set_defaults(handler=command_export_gguf)


def command_export_gguf(args: argparse.Namespace) -> int:
    """Write the file and say what it is and how to use it."""
    from ..gguf import export_gguf

    path = export_gguf(
        args.model, args.out, args.gguf_type, threads=args.threads, family=args.family, show_progress=True
    )
    size = path.stat().st_size / 2**20
    print(f"Wrote {path} ({args.gguf_type}, {size:,.1f} MiB).")
    print(
        f"Use it as any model: {PROG} query ... --model {path}, or Encoder(model={str(path)!r}); a "
        f"reranker's file: --rerank-model {path}, or Reranker(model={str(path)!r})."
    )
    return 0
