"""Writing record batches: embed only the ids that are missing, and count honestly.

This is the one place where records are written to Chroma: texts that :meth:`QZhouCollection.add`
embeds and vectors made elsewhere (a bulk output that ``load`` stores) are both :class:`.Record`
batches handed to :func:`write_batch`, which embeds only the records that carry no vector.

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

The collection's lexical index is written in step under the same lock (:class:`LexicalSync`, which
:mod:`.lexical_side` implements): its ids marked pending before the Chroma write, indexed after it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from tqdm.auto import tqdm

from ...encoder import wants_progress
from ...validation import check_count
from .records import Record, record_batches

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no file locks, the counts are then not exact
    fcntl = None  # type: ignore[assignment]

LOCK_FILE_NAME = "qzhou-plugins.lock"
"""The file in an embedded database's folder whose lock serialises the last check and the write."""

LOCAL_IMPLEMENTATIONS = ("chromadb.api.rust.RustBindingsAPI", "chromadb.api.segment.SegmentAPI")
"""Chroma clients that hold the database in this process (the others talk to a server)."""

_in_memory_lock = threading.Lock()
logger = logging.getLogger("qzhou_plugins")


class LexicalSync(Protocol):
    """What a write tells the collection's lexical index; none of it ever raises."""

    def mark(self, ids: list[str]) -> None:
        """Before the Chroma write: ``ids`` are about to change."""

    def added(self, ids: list[str], texts: list[str | None]) -> None:
        """After a Chroma add or upsert of ``ids`` with these documents."""

    def deleted(self, ids: list[str]) -> None:
        """After a Chroma delete of ``ids``."""


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
    final check and the write happen under a lock, and whenever the call set out to write nothing
    (everything was found stored before any embedding or writing); False when records were embedded
    or written through a Chroma server, where another client may store the same id in the moment
    between the check and the write (both then count it, and the store holds it once). It describes
    the counts and takes no part in comparing two results.
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
    embed: Callable[[list[str]], np.ndarray] | None = None,
    lexical: LexicalSync | None = None,
) -> AddResult:
    """Store the records of ``batch`` whose ids are missing; embed only those that carry no vector.

    Records to embed are looked up first, so that nothing stored is embedded; records that carry
    their vector need only the check under the lock, right before the write (nothing is done in
    vain if another writer stores them meanwhile, so none counts in ``present_on_write``).
    """
    to_embed = any(record.vector is None for record in batch)
    stored = stored_documents(collection, [record.id for record in batch]) if to_embed else {}
    missing: dict[str, Record] = {}
    for record in batch:
        if record.id not in stored and record.id not in missing:
            missing[record.id] = record  # the first of repeated ids: one record, embedded once
    new = list(missing.values())
    written, meanwhile, exact = _write_missing(client, collection, new, embed, lexical)
    stored.update(meanwhile)
    embedded = [record for record in new if record.vector is None]
    return AddResult(
        added=len(written),
        skipped=len(batch) - len(written),
        conflicts=tuple(
            r.id for r in batch if r.text is not None and r.id in stored and stored[r.id] != r.text
        ),
        present_on_write=sum(1 for record in embedded if record.id in meanwhile),
        # Uncertain only through a server, and only for what this call set out to write.
        exact=exact or not (written or embedded),
    )


def _write_missing(
    client: ClientAPI,
    collection: Collection,
    new: list[Record],
    embed: Callable[[list[str]], np.ndarray] | None,
    lexical: LexicalSync | None,
) -> tuple[list[Record], dict[str, str | None], bool]:
    """Embed what ``new`` needs and write what is still missing then.

    Returns the records written, the stored documents of those another writer stored meanwhile, and
    whether that split is certain.
    """
    if not new:
        return [], {}, True
    vectors = record_vectors(new, embed)
    with write_lock(client) as exact:
        meanwhile = stored_documents(collection, [record.id for record in new])
        keep = [i for i, record in enumerate(new) if record.id not in meanwhile]
        written = [new[i] for i in keep]
        if written:
            ids = [record.id for record in written]
            metadatas = [record.metadata for record in written]
            if lexical is not None:
                lexical.mark(ids)
            collection.add(
                ids=ids,
                documents=record_documents(written),  # type: ignore[arg-type]
                metadatas=metadatas if any(m is not None for m in metadatas) else None,  # type: ignore[arg-type]
                embeddings=vectors[keep],
            )
            if lexical is not None:
                lexical.added(ids, [record.text for record in written])
    return written, meanwhile, exact


def record_vectors(records: list[Record], embed: Callable[[list[str]], np.ndarray] | None) -> np.ndarray:
    """One row per record: the vector it carries, or the model's vector of its text."""
    pending = [i for i, record in enumerate(records) if record.vector is None]
    if not pending:
        return np.stack([record.vector for record in records])  # type: ignore[misc]
    texts = [records[i].text for i in pending]
    if embed is None or None in texts:
        raise ValueError("a record with neither a vector nor a text to embed cannot be written")
    embedded = np.asarray(embed(texts))  # type: ignore[arg-type]
    if len(pending) == len(records):
        return embedded
    rows = [record.vector for record in records]
    for row, i in enumerate(pending):
        rows[i] = embedded[row]
    return np.stack(rows)  # type: ignore[arg-type]


def record_documents(records: list[Record]) -> list[str] | None:
    """The records' texts as Chroma's documents; None when none has one (vectors stored alone)."""
    texts = [record.text for record in records]
    if all(text is None for text in texts):
        return None
    if any(text is None for text in texts):
        raise ValueError("one write mixes records with and without a document; write them apart")
    return texts  # type: ignore[return-value]


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


def progress_batches(
    client: ClientAPI,
    label: str,
    inputs: tuple[Any, Any, Any],
    batch_size: int,
    show_progress: bool | None,
    configured: Callable[[], bool | None],
) -> Iterator[list[Record]]:
    """The validated records of (texts, metadatas, ids), ``batch_size`` at a time, with a progress bar
    if wanted (as asked, else as the encoder is ``configured``)."""
    batch_size = checked_batch_size(client, batch_size)
    total = len(inputs[0]) if isinstance(inputs[0], Sized) else None
    show = wants_progress(show_progress, total, configured())
    with tqdm(total=total, unit="text", desc=label, disable=not show) as bar:
        for batch in record_batches(*inputs, batch_size):
            yield batch
            bar.update(len(batch))


def checked_batch_size(client: ClientAPI, batch_size: object) -> int:
    """A positive ``batch_size``, at most what one Chroma write takes."""
    try:
        counted = check_count(batch_size, what="batch_size", allow_none=False, minimum=1)
    except (TypeError, ValueError):
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}") from None
    assert counted is not None
    return min(counted, client.get_max_batch_size())


def warn_conflicts(name: str, result: AddResult) -> None:
    """Say which ids an add left unchanged although their stored document differs."""
    if result.conflicts:
        logger.warning(
            "%d ids were already in %r with a different document and were left unchanged (first: %s); "
            "use upsert() to replace them, or give new ids to store the new texts.",
            len(result.conflicts),
            name,
            ", ".join(result.conflicts[:5]),
        )
