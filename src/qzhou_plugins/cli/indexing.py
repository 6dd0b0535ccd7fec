"""``index``: keep a Chroma collection equal to a fresh index of files and folders, once or as they change.

The command is a thin shell over :meth:`qzhou_plugins.chroma.QZhouCollection.sync`: what it adds,
replaces, removes and leaves alone is decided there. What the command line adds: a new collection's
files are read (and refused, naming the file) before the collection is created, one summary line, and
``--watch`` (:mod:`.watching`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config import DEFAULT_MODEL
from ..documents import CHUNK_OVERLAP, CHUNK_SIZE, UnreadableDocumentError, read_documents
from .collection import collection_options, open_collection
from .documents import find_files
from .errors import DocumentError, UsageError
from .hybrid import add_lexical_options
from .where import check_where, database, describe_where


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``index`` to the sub-command set ``commands``."""
    index = commands.add_parser(
        "index",
        parents=[common],
        help="keep a Chroma collection in sync with .txt, .md, .jsonl, .pdf, .html and .docx files",
        description="Split files into chunks and store them in a Chroma collection (created if needed), "
        "so that it holds exactly what a fresh index of the files would: running it again reads and "
        "embeds only the files that changed, replaces their old chunks, and removes the chunks of files "
        "gone from a folder given. Folders are walked. In .jsonl files each line is a JSON object with a "
        "'text' field; the other fields are kept as metadata. PDF chunks record their page. Binary, "
        "encrypted and damaged files in a folder are skipped with a warning. "
        "A lexical (BM25) index of the chunks is kept beside the collection, for `query --mode lexical` "
        "and `--mode hybrid`.",
    )
    index.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to index")
    collection_options(
        index,
        model_help=f"embedding model for a new collection (default: {DEFAULT_MODEL}); an existing "
        "collection keeps the model it was created with, and a different one is refused",
        max_length_help="tokens per chunk, instruction included, for a new collection (default: the "
        "model's); an existing collection keeps the length it was created with, and a different one "
        "is refused",
    )
    index.add_argument(
        "--chunk-size", type=int, default=CHUNK_SIZE, help="characters per chunk (default: %(default)s)"
    )
    index.add_argument(
        "--chunk-overlap",
        type=int,
        default=CHUNK_OVERLAP,
        help="characters shared by neighbouring chunks (default: %(default)s); changing either "
        "re-chunks every file",
    )
    index.add_argument(
        "--keep-missing",
        action="store_true",
        help="keep the chunks of files gone from a folder given (default: remove them)",
    )
    index.add_argument("--dry-run", action="store_true", help="say what would change, and write nothing")
    index.add_argument(
        "--watch",
        action="store_true",
        help="stay running and keep the collection in sync as files change (Ctrl-C ends it)",
    )
    add_lexical_options(index, new="a new collection's lexical index")
    index.set_defaults(handler=command_index)


def command_index(args: argparse.Namespace) -> int:
    if args.chunk_size < 1 or not 0 <= args.chunk_overlap < args.chunk_size:
        raise UsageError("--chunk-size must be positive and --chunk-overlap between 0 and the chunk size")
    if args.watch and args.dry_run:
        raise UsageError("--watch writes as files change; leave out --dry-run")
    check_where(args)
    collection = _existing(args)
    if collection is None:
        files = _check_new_files(args)
        if args.dry_run:
            print(f"Dry run: collection {args.collection!r} does not exist; indexing would create it "
                  f"from {files} file(s). Nothing was written.")  # fmt: skip
            return 0
        collection = _open_for_index(args)
    if args.watch:
        from .watching import watch

        return watch(collection, args, sync_once)
    sync_once(collection, args)
    return 0


def sync_once(
    collection: Any, args: argparse.Namespace, *, skip_unreadable: bool = False, said: Any = None
) -> Any:
    """One sync, its warnings on stderr and its summary on stdout; nothing printed when it changed
    nothing and skipped what the summary ``said`` skipped (a watch's quiet rounds)."""
    from ..integrations.chroma.sync_plan import PathError

    try:
        summary = collection.sync(
            args.paths, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap,
            keep_missing=args.keep_missing, dry_run=args.dry_run, skip_unreadable=skip_unreadable,
        )  # fmt: skip
    except PathError as error:
        raise UsageError(str(error)) from None
    if said is not None and not summary.changed and summary.skipped == said.skipped:
        return summary
    for file, reason in summary.skipped:
        said = reason if reason.startswith(file) else f"{file}: {reason}"
        print(f"warning: {said}", file=sys.stderr)
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if summary.not_read:
        print(summary.not_read, file=sys.stderr)
    where = f"collection {args.collection!r} ({describe_where(args)})"
    if summary.dry_run:
        print(f"Dry run, nothing written: {summary.line()} in {where}.")
        return summary
    print(f"Synced {where}: {summary.line()}; the collection holds {collection.count()}.")
    if summary.empty:
        print(f"{len(summary.empty)} file(s) had no text.")
    if summary.changed or not collection.lexical.index:
        print(_lexical_index_line(collection))
    return summary


def _existing(args: argparse.Namespace) -> Any:
    """The collection if it exists (not created, and no model loaded), else None."""
    from ..chroma import CollectionNotFoundError
    from ..integrations.chroma.opening import check_name

    try:
        check_name(args.collection)
    except ValueError:
        return None  # refused when it is created, once its files are found readable
    if args.host is None and not Path(database(args)).is_dir():
        return None
    try:
        collection = open_collection(args, create=False, missing_ok=True)
    except CollectionNotFoundError:
        return None
    if args.max_length is not None and collection.encoder.max_length != args.max_length:
        recorded = collection.encoder.max_length
        raise ValueError(
            f"collection {args.collection!r} embeds its chunks with max_length {recorded}, as it was "
            f"created; --max-length {args.max_length} would embed new chunks differently, and the chunks "
            "already there would not be embedded again. Leave --max-length out, or index into a new "
            f"collection (--collection OTHER --max-length {args.max_length})"
        )
    return collection


def _check_new_files(args: argparse.Namespace) -> int:
    """Read a new collection's files before it is made: a bad one stops the command with nothing written."""
    from ..integrations.chroma.sync_plan import files_to_sync

    try:
        found, _ = files_to_sync(args.paths)
    except UnreadableDocumentError:
        raise
    except DocumentError as error:
        raise UsageError(str(error)) from None
    if not found.files:
        find_files(args.paths)  # says why, as a usage error: a folder with no document in it
    documents = read_documents(found.files, args.chunk_size, args.chunk_overlap, named=found.named)
    if not documents.chunks:
        for _file, reason in [*documents.binary, *documents.broken, *documents.warnings]:
            print(f"warning: {reason}", file=sys.stderr)
        skipped = f" ({documents.skipped_kinds()}, skipped)" if documents.skipped else ""
        raise DocumentError(f"nothing to index: the {len(found.files)} file(s) hold no text{skipped}")
    return len(found.files)


def _open_for_index(args: argparse.Namespace) -> Any:
    """A new collection, created with ``--max-length`` if given."""
    options = {} if args.max_length is None else {"max_length": args.max_length}
    return open_collection(args, create=True, **options)


def _lexical_index_line(collection: Any) -> str:
    """Where the collection's lexical index is (built now for a collection made before it had one)."""
    if collection.lexical.folder is None:
        return (
            "No lexical index: a collection on a Chroma server keeps one only where --lexical-dir says "
            "(needed by query --mode lexical and hybrid)."
        )
    index = collection.lexical_index()
    return (
        f"Lexical index ({collection.analyzer} analyzer, {collection.lexical_engine}, {index.count()} "
        f"chunk(s)): {collection.lexical.folder}"
    )
