"""The per-file record of a synced folder, and the lock that lets one sync of a collection run at a time.

``index`` keeps a collection equal to a fresh index of the files it is given. To skip the files that did
not change without reading them, it keeps one record per file: the resolved path, the source name its
chunks carry, size, modification time (ns), the sha256 of its bytes, the chunking settings and the ids
of its chunks. The record is derived data: Chroma stays the source of truth, and a record whose chunk ids
are not the ones Chroma holds for that source is not trusted (the file is read again), so a sync killed
between its writes is repaired by the next one.

The records live in one SQLite file per collection beside its lexical index (``<name>.files.sqlite3``);
the lock is ``<name>.sync.lock`` there, a ``fcntl`` lock that the kernel releases when its process dies.
This module is framework-free: the Chroma side of a sync is :mod:`qzhou_plugins.integrations.chroma.syncing`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no file locks, two syncs are then not kept apart
    fcntl = None  # type: ignore[assignment]

READER_VERSION = 1
"""Bumped when the readers or the chunking cut a file differently: every file is then read again."""
RACY_NS = 2_000_000_000
"""A file modified this close before its record was written may change again within the same
modification time (coarse file-system clocks): its bytes are hashed rather than trusted by size and time."""
RECORD_SUFFIX = ".files.sqlite3"
LOCK_SUFFIX = ".sync.lock"

SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
    path TEXT PRIMARY KEY, source TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, settings TEXT NOT NULL, chunk_ids TEXT NOT NULL, checked_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""


class IndexBusyError(RuntimeError):
    """Another process is syncing the same collection (its pid is named)."""


@dataclass(frozen=True)
class ChunkSettings:
    """What decides how a file is cut into chunks: a change re-chunks every file of the folder."""

    chunk_size: int
    chunk_overlap: int
    reader: int = READER_VERSION

    def key(self) -> str:
        return json.dumps([self.chunk_size, self.chunk_overlap, self.reader])


@dataclass(frozen=True)
class FileRecord:
    path: str
    """The file's resolved path."""
    source: str
    """The ``source`` metadata of its chunks."""
    size: int
    mtime_ns: int
    sha256: str
    settings: str
    """:meth:`ChunkSettings.key` of the chunking that made ``chunk_ids``."""
    chunk_ids: tuple[str, ...]
    checked_ns: int
    """When the record was written (for :data:`RACY_NS`)."""

    def same_stat(self, stat: os.stat_result) -> bool:
        """Whether size and modification time say the file is the one recorded (not racily so)."""
        return (
            stat.st_size == self.size
            and stat.st_mtime_ns == self.mtime_ns
            and self.mtime_ns < self.checked_ns - RACY_NS
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_path(root: Path, name: str) -> Path:
    return root / f"{name}{RECORD_SUFFIX}"


def remove_record(root: Path | None, name: str) -> None:
    """Delete a collection's records and lock file (the collection is being deleted)."""
    if root is None:
        return
    for suffix in (RECORD_SUFFIX, f"{RECORD_SUFFIX}-wal", f"{RECORD_SUFFIX}-shm", LOCK_SUFFIX):
        (root / f"{name}{suffix}").unlink(missing_ok=True)


class RecordStore:
    """The records of one collection: a SQLite file, or kept in memory when there is no folder."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None)
        self.db.executescript(SCHEMA)

    def load(self) -> dict[str, FileRecord]:
        rows = self.db.execute(
            "SELECT path, source, size, mtime_ns, sha256, settings, chunk_ids, checked_ns FROM files"
        )
        return {
            row[0]: FileRecord(*row[:6], chunk_ids=tuple(json.loads(row[6])), checked_ns=row[7])  # type: ignore[misc]
            for row in rows
        }

    def put(self, records: Iterable[FileRecord]) -> None:
        rows = [
            (
                r.path,
                r.source,
                r.size,
                r.mtime_ns,
                r.sha256,
                r.settings,
                json.dumps(r.chunk_ids),
                r.checked_ns,
            )
            for r in records
        ]
        if rows:
            with self._transaction():
                self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def remove(self, paths: Iterable[str]) -> None:
        gone = [(path,) for path in paths]
        if gone:
            with self._transaction():
                self.db.executemany("DELETE FROM files WHERE path = ?", gone)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


class IndexLock:
    """Held by a sync of one collection for its whole run; a second one is refused, naming the holder.

    A non-blocking ``flock`` on ``<name>.sync.lock``, which records the holder's pid; the kernel
    releases it when the holder ends, however it ends (SIGKILL included). No folder: no lock.
    """

    def __init__(self, root: Path | None, name: str) -> None:
        self.path = None if root is None else root / f"{name}{LOCK_SUFFIX}"
        self.name = name
        self.handle: IO[str] | None = None

    def __enter__(self) -> IndexLock:
        if self.path is None or fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise IndexBusyError(
                f"collection {self.name!r} is being indexed by another process (pid {holder}); wait for it "
                f"to finish, or stop it (its lock: {self.path})"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            assert fcntl is not None
            self.handle.truncate(0)
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
