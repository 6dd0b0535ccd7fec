"""The journal of pending ids, one table that both engines keep in a SQLite file of the index.

FTS5 keeps it in its own database, so an add or a delete clears its ids in the same transaction;
tantivy keeps it in ``journal.sqlite3`` beside its files and clears it right after its commit (a crash
in between leaves the marks, and the repair redoes an add or delete that had already happened, which
changes nothing).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

SCHEMA = "CREATE TABLE IF NOT EXISTS pending(id TEXT PRIMARY KEY) WITHOUT ROWID;"


def mark(db: sqlite3.Connection, ids: Iterable[str]) -> None:
    db.executemany("INSERT OR IGNORE INTO pending(id) VALUES (?)", ((id_,) for id_ in ids))


def clear(db: sqlite3.Connection, ids: Iterable[str]) -> None:
    db.executemany("DELETE FROM pending WHERE id = ?", ((id_,) for id_ in ids))


def pending(db: sqlite3.Connection) -> list[str]:
    return [id_ for (id_,) in db.execute("SELECT id FROM pending")]
