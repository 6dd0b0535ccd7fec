"""Writing record batches: embed only the ids that are missing, and count honestly.

Chroma's ``add`` returns nothing and keeps the first record of an id that is written twice. Two
writers adding the same records at once would each see them missing, each embed and write them,
and each report them added. So each batch is checked twice: before embedding (to skip what is
stored), and again right before the write, under a lock that every QZhouCollection writer of the
same database takes; what another writer stored in between is counted in ``present_on_write``,
not in ``added``.

The lock is a file lock in the folder of an embedded database (every process of this host) or a
process lock for an in-memory one, which makes the counts exact among QZhouCollection writers.
A Chroma server offers no lock: there another client can still store an id in the moments between
the last check and the write, and :attr:`AddResult.exact` says so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from .records import Record

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no file locks, the counts are then not exact
    fcntl = None  # type: ignore[assignment]

LOCK_FILE_NAME = "qzhou-plugins.lock"
"""The file in an embedded database's folder whose lock serialises the last check and the write."""

LOCAL_IMPLEMENTATIONS = ("chromadb.api.rust.RustBindingsAPI", "chromadb.api.segment.SegmentAPI")
"""Chroma clients that hold the database in this process (the others talk to a server)."""

_in_memory_lock = threading.Lock()


@dataclass(frozen=True)
class AddResult:
    """What :meth:`QZhouCollection.add` did.

    ``added`` counts the records this call wrote. ``skipped`` counts the others, not written because
    their id was already stored (or repeated within the call). ``present_on_write`` counts those of
    ``skipped`` that were missing when the call looked, but that another writer stored while this
    call was embedding them (they were embedded in vain, and are stored once).
    ``conflicts`` lists the skipped ids whose stored document differs from the one given, the only
    case where a skip leaves the caller's text out of the collection.

    ``exact`` is whether ``added`` is certain: True on an embedded or in-memory database, where the
    final check and the write happen under a lock, and whenever nothing was written; False when
    records were written through a Chroma server, where another client may store the same id in the
    moment between them (both then count it, and the store holds it once). It describes the counts
    and takes no part in comparing two results.
    """

    added: int
    skipped: int
    conflicts: tuple[str, ...] = ()
    present_on_write: int = 0
    exact: bool = field(default=True, compare=False)

    def __add__(self, other: AddResult) -> AddResult:
        return AddResult(
            added=self.added + other.added,
            skipped=self.skipped + other.skipped,
            conflicts=self.conflicts + other.conflicts,
            present_on_write=self.present_on_write + other.present_on_write,
            exact=self.exact and other.exact,
        )


def write_batch(
    client: ClientAPI,
    collection: Collection,
    batch: list[Record],
    embed: Callable[[list[str]], np.ndarray],
) -> AddResult:
    """Store the records of ``batch`` whose ids are missing; embed nothing that is stored already."""
    stored = stored_documents(collection, [record.id for record in batch])
    missing: dict[str, Record] = {}
    for record in batch:
        if record.id not in stored and record.id not in missing:
            missing[record.id] = record  # the first of repeated ids: one record, embedded once
    new = list(missing.values())
    written, meanwhile, exact = _write_missing(client, collection, new, embed)
    stored.update(meanwhile)
    return AddResult(
        added=len(written),
        skipped=len(batch) - len(written),
        conflicts=tuple(r.id for r in batch if r.id in stored and stored[r.id] != r.text),
        present_on_write=len(meanwhile),
        exact=exact,
    )


def _write_missing(
    client: ClientAPI, collection: Collection, new: list[Record], embed: Callable[[list[str]], np.ndarray]
) -> tuple[list[Record], dict[str, str | None], bool]:
    """Embed ``new`` and write what is still missing then.

    Returns the records written, the stored documents of those another writer stored meanwhile, and
    whether that split is certain.
    """
    if not new:
        return [], {}, True
    vectors = embed([record.text for record in new])
    with write_lock(client) as exact:
        meanwhile = stored_documents(collection, [record.id for record in new])
        keep = [i for i, record in enumerate(new) if record.id not in meanwhile]
        written = [new[i] for i in keep]
        if written:
            metadatas = [record.metadata for record in written]
            collection.add(
                ids=[record.id for record in written],
                documents=[record.text for record in written],
                metadatas=metadatas if any(m is not None for m in metadatas) else None,  # type: ignore[arg-type]
                embeddings=vectors[keep],
            )
    return written, meanwhile, exact


def stored_documents(collection: Collection, ids: list[str]) -> dict[str, str | None]:
    """The stored document of each of ``ids`` that is in the collection (None: stored without one)."""
    found = collection.get(ids=list(dict.fromkeys(ids)), include=["documents"])
    documents = found["documents"] or [None] * len(found["ids"])
    return dict(zip(found["ids"], documents, strict=True))


@contextmanager
def write_lock(client: ClientAPI) -> Iterator[bool]:
    """Held by every QZhouCollection writer of one local database for its last check and write.

    Yields whether the lock covers every such writer (False through a server, or with no file locks).
    """
    settings = client.get_settings()
    if settings.chroma_api_impl not in LOCAL_IMPLEMENTATIONS:
        yield False  # a server: there is no lock that all of its clients could share
    elif settings.is_persistent and settings.persist_directory and fcntl is not None:
        folder = Path(settings.persist_directory)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / LOCK_FILE_NAME).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if the process dies
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        with _in_memory_lock:
            yield not settings.is_persistent
