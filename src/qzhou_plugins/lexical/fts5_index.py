"""The default engine: SQLite FTS5 (standard library), exact BM25 with any k1 and b.

One SQLite file, ``fts5.sqlite3``, in WAL mode (readers never wait for a writer; other processes see
each commit):

- ``documents(rowid, id, length)``: each id, and its number of terms after analysis;
- ``postings``: an FTS5 table of each document's analyzed terms, space-joined, under the document's
  rowid, split back by FTS5's ``ascii`` tokenizer exactly as they were made (terms hold no space, and
  ``.`` and ``_`` are declared term characters); ``term_documents`` and ``term_occurrences`` are its
  ``fts5vocab`` row and instance tables, which give each term's document count and occurrences;
- ``totals``: the document count and the summed lengths, kept by triggers in the same transaction;
- ``pending``: the journal of ids about to change (:class:`~qzhou_plugins.lexical.LexicalIndex`).

Every add or delete is one transaction (``BEGIN IMMEDIATE``: writers of several processes take turns,
waiting up to :data:`BUSY_TIMEOUT_S`). Synchronous mode is NORMAL: a power cut may lose the last
commits (never corrupt the file), which the repair from the source of truth restores. Queries read one
snapshot, and score as :mod:`qzhou_plugins.lexical.bm25` says, with document lengths cached in memory
(4 bytes a document) and reloaded when another connection has written.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from . import journal
from .analyzers import analyzer
from .base import LexicalHit, checked_documents, checked_ids
from .bm25 import check_query, idf, query_terms
from .folder import remove_index
from .settings import LexicalIndexError, LexicalSettings

FILE_NAME = "fts5.sqlite3"
BUSY_TIMEOUT_S = 60.0
_SQL_VARIABLES = 10_000
"""Ids per statement (SQLite allows 32,766 variables since 3.32)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents(rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
                                     length INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS totals(one INTEGER PRIMARY KEY CHECK (one = 1), documents INTEGER NOT NULL,
                                  terms INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (1, 0, 0);
CREATE VIRTUAL TABLE IF NOT EXISTS postings USING fts5(terms, tokenize="ascii tokenchars '._'",
                                                       columnsize=0);
CREATE VIRTUAL TABLE IF NOT EXISTS term_documents USING fts5vocab(postings, row);
CREATE VIRTUAL TABLE IF NOT EXISTS term_occurrences USING fts5vocab(postings, instance);
CREATE TRIGGER IF NOT EXISTS document_added AFTER INSERT ON documents BEGIN
  UPDATE totals SET documents = documents + 1, terms = terms + new.length;
END;
CREATE TRIGGER IF NOT EXISTS document_removed AFTER DELETE ON documents BEGIN
  UPDATE totals SET documents = documents - 1, terms = terms - old.length;
  DELETE FROM postings WHERE rowid = old.rowid;
END;
"""


class Fts5Index:
    """A lexical index in one SQLite FTS5 file; see the module for the layout. Thread-safe."""

    def __init__(self, path: Path, settings: LexicalSettings) -> None:
        self.path = path
        self.settings = settings
        self._analyze = analyzer(settings.analyzer)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(
                path / FILE_NAME, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}{journal.SCHEMA}COMMIT;")
        except sqlite3.Error as error:
            self.close()
            raise LexicalIndexError(f"the FTS5 lexical index in {path} cannot be opened: {error}") from error
        self._lengths = np.zeros(0, dtype=np.float32)
        self._data_version = -1

    # -- writing ------------------------------------------------------------------------------------

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        ids, texts = checked_documents(ids, texts)
        if not ids:
            return
        terms = [self._analyze(text) for text in texts]
        with self._lock, self._transaction(write=True) as db:
            self._delete_rows(db, ids)
            (last,) = db.execute("SELECT coalesce(max(rowid), 0) FROM documents").fetchone()
            rowids = range(last + 1, last + 1 + len(ids))
            db.executemany(
                "INSERT INTO documents(rowid, id, length) VALUES (?, ?, ?)",
                zip(rowids, ids, map(len, terms), strict=True),
            )
            db.executemany(
                "INSERT INTO postings(rowid, terms) VALUES (?, ?)",
                zip(rowids, map(" ".join, terms), strict=True),
            )
            journal.clear(db, ids)
            self._remember_lengths(db, rowids, [len(t) for t in terms])

    def delete(self, ids: Iterable[str]) -> int:
        ids = checked_ids(ids)
        with self._lock, self._transaction(write=True) as db:
            removed = self._delete_rows(db, ids)
            journal.clear(db, ids)
        return removed

    def mark_pending(self, ids: Iterable[str]) -> None:
        ids = checked_ids(ids)
        with self._lock, self._transaction(write=True) as db:
            journal.mark(db, ids)

    @staticmethod
    def _delete_rows(db: sqlite3.Connection, ids: list[str]) -> int:
        """Delete the documents of ``ids`` (the trigger removes their postings); how many there were."""
        (before,) = db.execute("SELECT documents FROM totals").fetchone()
        db.executemany("DELETE FROM documents WHERE id = ?", ((id_,) for id_ in ids))
        (after,) = db.execute("SELECT documents FROM totals").fetchone()
        return int(before - after)

    def _remember_lengths(self, db: sqlite3.Connection, rowids: range, lengths: list[int]) -> None:
        """Our own writes update the cached lengths; another connection's make the next search reload."""
        if self._data_version != db.execute("PRAGMA data_version").fetchone()[0]:
            return  # already stale: the next search reloads everything
        if rowids.stop > len(self._lengths):
            self._lengths = np.concatenate(
                [self._lengths, np.zeros(max(rowids.stop, 2 * len(self._lengths)) - len(self._lengths), "f4")]
            )
        self._lengths[rowids.start : rowids.stop] = lengths

    # -- reading ------------------------------------------------------------------------------------

    def search(self, query: str, k: int = 10) -> list[LexicalHit]:
        k = check_query(query, k)
        terms = query_terms(self._analyze(query))
        if not terms:
            return []
        with self._lock, self._transaction(write=False) as db:
            documents, total_length = db.execute("SELECT documents, terms FROM totals").fetchone()
            held = "SELECT term, doc FROM term_documents WHERE term IN ({})"
            counts = dict(_select_in(db, held, list(terms)))
            if not counts:
                return []
            self._refresh_lengths(db)
            rowids, scores = self._scores(db, terms, counts, documents, total_length / documents)
            best = _best(rowids, scores, k)
            chosen = [int(rowids[i]) for i in best]
            names = dict(_select_in(db, "SELECT rowid, id FROM documents WHERE rowid IN ({})", chosen))
        return [LexicalHit(names[int(rowids[i])], float(scores[i])) for i in best]

    def _scores(
        self,
        db: sqlite3.Connection,
        terms: dict[str, int],
        counts: dict[str, int],
        documents: int,
        mean_length: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rowids of the documents holding a query term, and their BM25 scores (float64)."""
        k1, b = self.settings.k1, self.settings.b
        scores = np.zeros(len(self._lengths), dtype=np.float64)
        for term, repeats in terms.items():
            if term not in counts:
                continue
            (joined,) = db.execute(
                "SELECT group_concat(doc, ' ') FROM term_occurrences WHERE term = ?", (term,)
            ).fetchone()
            rowids, frequency = _frequencies(np.fromstring(joined, dtype=np.int64, sep=" "))
            norm = k1 * (1.0 - b + b * self._lengths[rowids].astype(np.float64) / mean_length)
            weight = repeats * idf(documents, counts[term]) * (k1 + 1.0)
            scores[rowids] += weight * frequency / (frequency + norm)
        found = np.flatnonzero(scores)
        return found, scores[found]

    def _refresh_lengths(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return
        rows = np.array(db.execute("SELECT rowid, length FROM documents").fetchall(), dtype=np.int64)
        lengths = np.zeros(int(rows[:, 0].max()) + 1 if len(rows) else 0, dtype=np.float32)
        if len(rows):
            lengths[rows[:, 0]] = rows[:, 1]
        self._lengths, self._data_version = lengths, version

    def count(self) -> int:
        with self._lock, self._transaction(write=False) as db:
            return int(db.execute("SELECT documents FROM totals").fetchone()[0])

    def ids(self) -> Iterator[str]:
        with self._lock, self._transaction(write=False) as db:
            found = [id_ for (id_,) in db.execute("SELECT id FROM documents")]
        return iter(found)

    def pending(self) -> list[str]:
        with self._lock, self._transaction(write=False) as db:
            return journal.pending(db)

    # -- the connection -----------------------------------------------------------------------------

    def _transaction(self, *, write: bool) -> AbstractContextManager[sqlite3.Connection]:
        return journal.transaction(self._db, self.path, write=write)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def remove(self) -> None:
        self.close()
        remove_index(self.path)

    def __enter__(self) -> Fts5Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Fts5Index({str(self.path)!r}, analyzer={self.settings.analyzer!r})"


def _select_in(db: sqlite3.Connection, sql: str, values: list) -> list[tuple]:
    """The rows of ``sql`` (with ``IN ({})``) for all ``values``, a statement per SQLite's limit of them."""
    rows: list[tuple] = []
    for start in range(0, len(values), _SQL_VARIABLES):
        chunk = values[start : start + _SQL_VARIABLES]
        rows.extend(db.execute(sql.format(",".join("?" * len(chunk))), chunk))
    return rows


def _frequencies(occurrences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rowids of one term's occurrences and how often each occurs there.

    FTS5 lists a term's occurrences by document, so one pass finds the runs; a sort is the fallback
    should a later SQLite list them otherwise.
    """
    if len(occurrences) > 1 and not np.all(occurrences[1:] >= occurrences[:-1]):
        occurrences = np.sort(occurrences)
    starts = np.flatnonzero(np.diff(occurrences, prepend=-1))
    return occurrences[starts], np.diff(starts, append=len(occurrences)).astype(np.float64)


def _best(rowids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best scores, best first, ties by rowid (the order documents came in)."""
    if len(scores) > k:
        threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = np.flatnonzero(scores >= threshold)
    else:
        keep = np.arange(len(scores))
    order = np.lexsort((rowids[keep], -scores[keep]))
    return keep[order[:k]]
