"""``load``: a finished ``embed`` output into a Chroma collection, its vectors stored as they are.

No ``--model``: the output's fingerprint says which model and exact prefixes made the vectors, and
a new collection is created with them (an existing one must match, or nothing is written). The
collection is found as ``index`` and ``query`` find theirs (``--db``, or ``--host``/``--port`` of a
Chroma server: :mod:`.where`). Chroma is imported when the command runs, never for ``--help``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..arguments import positive_int
from .hybrid import add_lexical_options, lexical_options
from .where import add_where_options, describe_where, open_client


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``load`` to the sub-command set ``commands``."""
    load = commands.add_parser(
        "load",
        parents=[common],
        help="load vectors written by `embed` into a Chroma collection, without embedding them again",
        description="Store the vectors of a finished `embed` output in a Chroma collection, created "
        "with the output's model and instructions if it does not exist (an existing one must match). "
        "Ids already there are skipped, so running it again adds only what is missing; the output's "
        "texts become the documents if it kept them (`embed --with-text`), and are kept in step in the "
        "collection's lexical index.",
    )
    load.add_argument("output", metavar="DIR", type=Path, help="a finished `embed --out` folder")
    add_where_options(load)
    load.add_argument(
        "--batch-size", type=positive_int, default=None, metavar="N", help="vectors per write (default: 1024)"
    )
    add_lexical_options(load, new="a new collection's lexical index")
    load.set_defaults(handler=command_load)


def command_load(args: argparse.Namespace) -> int:
    from ..chroma import QZhouCollection

    client = open_client(args, create=True)
    collection = QZhouCollection.open_precomputed(
        args.collection, args.output, client=client, **lexical_options(args)
    )
    options = {} if args.batch_size is None else {"batch_size": args.batch_size}
    result = collection.add_precomputed(args.output, **options)
    query_prefix, document_prefix = collection.embedding_function.prefixes
    print(
        f"Loaded {args.output} into collection {args.collection!r} ({describe_where(args)}): "
        f"{result.added} vector(s) added, {result.skipped} already there; the collection holds "
        f"{collection.count()}.\nModel {collection.model}, query prefix {query_prefix!r}, document prefix "
        f"{document_prefix!r}: queries and new texts are embedded as the output's vectors were."
    )
    if not _kept_texts(args.output):
        print("The output kept no texts (embed --with-text keeps them), so no documents were stored.")
    return 0


def _kept_texts(output: Path) -> bool:
    from ..bulk.load import read_fingerprint

    return bool(read_fingerprint(output).get("text_column"))
