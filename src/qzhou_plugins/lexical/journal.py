"""The journal of pending ids, one table that both engines keep in a SQLite file of the index.

FTS5 keeps it in its own database, so an add or a delete clears its ids in the same transaction;
tantivy keeps it in ``journal.sqlite3`` beside its files and clears it right after its commit (a crash
in between leaves the marks, and the repair redoes an add or delete that had already happened, which
changes nothing).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .settings import LexicalIndexError

SCHEMA = "CREATE TABLE IF NOT EXISTS pending(id TEXT PRIMARY KEY) WITHOUT ROWID;"


def mark(db: sqlite3.Connection, ids: Iterable[str]) -> None:
    db.executemany("INSERT OR IGNORE INTO pending(id) VALUES (?)", ((id_,) for id_ in ids))


def clear(db: sqlite3.Connection, ids: Iterable[str]) -> None:
    db.executemany("DELETE FROM pending WHERE id = ?", ((id_,) for id_ in ids))


def pending(db: sqlite3.Connection) -> list[str]:
    return [id_ for (id_,) in db.execute("SELECT id FROM pending")]


@contextmanager
def transaction(
    db: sqlite3.Connection | None, path: Path, *, write: bool = True
) -> Iterator[sqlite3.Connection]:
    """One transaction (a snapshot for reads), rolled back if anything in it fails.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so two writers queue instead of one failing
    half-way with "database is locked". ``db`` is None once the index is closed.
    """
    if db is None:
        raise LexicalIndexError(f"the lexical index in {path} is closed")
    db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
