"""The ``qzhou-plugins embed`` command line: its flags, and the run they describe.

Kept beside the job rather than in the CLI package so that the flags and :func:`embed_corpus`'s
arguments are one vocabulary, maintained in one place; the CLI adds the subcommand with
:func:`add_embed_arguments` and calls :func:`embed_from_arguments`. Flag values are checked by
argparse (a usage error before any file is read); everything else by :func:`embed_corpus`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..arguments import add_base_url, add_family_options, family_options, positive
from ..documents import CHUNK_OVERLAP, CHUNK_SIZE
from ..ray_cluster import LOCAL
from .choices import DEFAULT_SHARD_ROWS, EXPORT_PRECISIONS, SIDES, STORAGE_DTYPES

if TYPE_CHECKING:
    from .job import BulkResult


def _field_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated field names, not {text!r}")
    return names


def add_embed_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``embed`` flags to ``parser`` (a subcommand's parser); returns it."""
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="a JSON-lines corpus, a parquet file or folder, or documents (a .txt/.md file or a folder)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (rerun to resume)")
    parser.add_argument("--model", required=True, help="hub id or local folder of the model")
    parser.add_argument("--side", choices=SIDES, default="document", help="which side's prefix to use")
    parser.add_argument("--task", help="task type, published task name, or an instruction sentence")
    parser.add_argument("--id-field", default="_id", help="the id field or column (default: _id)")
    parser.add_argument(
        "--text-fields",
        type=_field_names,
        default=["title", "text"],
        help="fields joined with a space into the text (default: title,text)",
    )
    _add_metadata_arguments(parser)
    parser.add_argument(
        "--chunk-size",
        type=positive(int),
        help=f"documents: characters per chunk, as index cuts them (default: {CHUNK_SIZE})",
    )
    parser.add_argument(
        "--chunk-overlap",
        type=positive(int, zero=True),
        help=f"documents: characters shared by neighbouring chunks (default: {CHUNK_OVERLAP})",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="run on Ray Data: no ADDRESS starts a local cluster; 'auto' or ray://host:10001 joins one "
        "(write --ray=ADDRESS, or put SOURCE first)",
    )
    parser.add_argument("--actors", type=positive(int), default=1, help="Ray actors (models) in the pool")
    parser.add_argument("--gpus-per-actor", type=positive(float), help="GPUs of each Ray actor")
    parser.add_argument("--dtype", choices=STORAGE_DTYPES, default="float32", help="storage dtype")
    add_base_url(parser)
    parser.add_argument("--max-length", type=positive(int), help="tokens per text before truncation")
    parser.add_argument("--batch-tokens", type=positive(int), help="token budget of one forward pass")
    parser.add_argument("--device", help="torch device (default: CUDA when present)")
    add_family_options(parser)
    parser.add_argument("--shard-rows", type=positive(int), default=DEFAULT_SHARD_ROWS, help="rows per shard")
    parser.add_argument("--with-text", action="store_true", help="also store each row's text")
    parser.add_argument(
        "--export",
        action="append",
        choices=EXPORT_PRECISIONS,
        default=[],
        help="after the run, also write int8 or binary codes to OUT-int8 / OUT-binary (repeatable)",
    )
    return parser


def _add_metadata_arguments(parser: argparse.ArgumentParser) -> None:
    """``--metadata-fields`` or ``--no-metadata``: what each record keeps beside its vector."""
    metadata = parser.add_mutually_exclusive_group()
    metadata.add_argument(
        "--metadata-fields",
        type=_field_names,
        default=None,
        help="fields kept beside each vector as its metadata, for `load` to store in Chroma (default: "
        "every field but the id and text fields, and the title; documents keep the source, line and "
        "chunk that index records)",
    )
    metadata.add_argument(
        "--no-metadata",
        dest="metadata_fields",
        action="store_const",
        const=[],
        help="keep no metadata of a corpus's records",
    )


def embed_from_arguments(args: argparse.Namespace) -> int:
    """Run the job the flags describe and print what it did; returns the exit code."""
    from .formats import export_quantized  # the job's modules (numpy, pyarrow) only when it runs
    from .job import embed_corpus

    options = {
        name: getattr(args, name)
        for name in ("max_length", "batch_tokens", "device", "base_url")
        if getattr(args, name) is not None
    }
    options.update(family_options(args))
    result = embed_corpus(
        args.source,
        args.out,
        model=args.model,
        side=args.side,
        task=args.task,
        id_field=args.id_field,
        text_fields=args.text_fields,
        metadata_fields=args.metadata_fields,
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        ray=None if args.ray is None else (True if args.ray == LOCAL else args.ray),
        actors=args.actors,
        gpus_per_actor=args.gpus_per_actor,
        dtype=args.dtype,
        text_column=args.with_text,
        shard_rows=args.shard_rows,
        **options,
    )
    print(summary(result))
    for precision in dict.fromkeys(args.export):
        destination = export_path(args.out, precision)
        exported = export_quantized(args.out, destination, precision)
        print(f"Wrote {precision} codes of {exported['rows']} rows to {destination}.")
    return 0


def export_path(out: Path, precision: str) -> Path:
    """Where ``--export`` writes: beside the output, never inside it (a reader of OUT reads every
    parquet file under it, and codes are not vectors)."""
    return out.parent / f"{out.name}-{precision}"


def summary(result: BulkResult) -> str:
    """One paragraph: what was added, how fast, and what the vectors are."""
    fingerprint = result.fingerprint
    speed = f"{result.rows_per_second:,.1f} rows/s"
    if result.tokens:
        speed += f", {result.tokens_per_second:,.0f} tokens/s"
    return (
        f"Embedded {result.added} row(s) into {result.out} ({result.already_stored} already there; "
        f"{result.rows} in all) in {result.seconds:,.1f} s ({speed}).\n"
        f"Vectors: {fingerprint['model']}, {fingerprint['dimension']} dimensions, {fingerprint['dtype']}, "
        f"{fingerprint['side']} side, prefix {fingerprint['prefix']!r}."
    )
