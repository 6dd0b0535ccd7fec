"""Where a command's collection is: ``--collection``, ``--db`` or ``--host``/``--port``, ``--lexical-dir``.

``index``, ``query`` and ``load`` define these flags here and open the Chroma client here, so the
three read alike and reach a collection the same way: a local (persistent) database folder, or a
``chroma run`` server. The collection's lexical index lives in the database folder, or in
``--lexical-dir`` (which a server's collection needs for lexical and hybrid queries). Chroma is
imported when a command runs, never for ``--help``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import UsageError
from .options import PROG

DEFAULT_PORT = 8000
"""The port ``chroma run`` listens on unless told otherwise."""


def add_where_options(parser: argparse.ArgumentParser, *, collection: bool = True) -> None:
    """``--collection`` (unless ``collection`` is False: a command over every collection), and either a
    local ``--db`` or a server's ``--host`` (with ``--port``)."""
    if collection:
        parser.add_argument(
            "--collection", "-c", required=True, metavar="NAME", help="Chroma collection name"
        )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--db",
        default=None,
        metavar="DIR",
        help="folder of a local (persistent) Chroma database (default: the 'chroma' folder of the "
        "working directory, where QZhouCollection.open keeps one)",
    )
    where.add_argument("--host", default=None, help="Chroma server host, instead of a local --db")
    parser.add_argument(
        "--port", type=int, default=None, help=f"Chroma server port, with --host (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--lexical-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of the collections' lexical (BM25) indexes (default: qzhou-lexical in the --db "
        "folder); a collection on a server (--host) needs one for --mode lexical and hybrid",
    )


def check_where(args: argparse.Namespace) -> None:
    """The flags' combination, checked before any work (argparse cannot say "--port needs --host"),
    and a ``--db`` that is a file, in the words ``QZhouCollection.open(path=...)`` uses."""
    if args.port is not None and args.host is None:
        raise UsageError("--port needs --host (a local --db has no port)")
    if args.host is None and not Path(database(args)).expanduser().is_dir():  # (the import loads Chroma)
        from ..integrations.chroma.opening import database_folder

        try:
            database_folder(database(args), what="--db")
        except ValueError as error:
            raise UsageError(str(error)) from None


def open_client(args: argparse.Namespace, *, create: bool) -> Any:
    """The Chroma client of ``--db`` or ``--host``/``--port``.

    A local database that does not exist is created only with ``create``; otherwise it is a one-line
    error saying how to make one, rather than an empty folder left behind by a mistyped ``--db``.
    """
    check_where(args)
    if args.host is not None:
        import chromadb

        return chromadb.HttpClient(host=args.host, port=args.port or DEFAULT_PORT)
    from ..integrations.chroma.opening import connect

    path = database(args)
    if not create and not Path(path).is_dir():
        raise ValueError(
            f"no Chroma database at {path}: index documents first "
            f"(`{PROG} index PATH --collection {args.collection}`) or pass --db"
        )
    return connect(path, None)


def database(args: argparse.Namespace) -> str:
    """``--db``, or the folder QZhouCollection.open uses by default (one name for one default)."""
    if args.db is not None:
        return str(args.db)
    from ..chroma import DEFAULT_PATH

    return str(DEFAULT_PATH)


def describe_where(args: argparse.Namespace) -> str:
    """``Chroma server HOST:PORT`` or ``database DIR``, for the commands' messages."""
    if args.host is not None:
        return f"Chroma server {args.host}:{args.port or DEFAULT_PORT}"
    return f"database {database(args)}"
