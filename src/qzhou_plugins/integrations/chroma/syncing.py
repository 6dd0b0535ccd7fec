"""Syncing files into a collection: afterwards it holds exactly what a fresh index of them would.

The writes are ordered so that a process killed at any moment leaves a state the next sync repairs
(:mod:`.sync_plan` trusts a record only where Chroma agrees with it):

1. a changed file's new chunks are added (a chunk whose text was stored before keeps its vector);
2. then its old chunks are removed, so the file is never missing from the collection;
3. then its record is written; a file gone from a folder loses its chunks first, its record after.

The lexical index follows every add and delete (the collection's own writes keep it in step). One sync
of a collection runs at a time (:class:`~qzhou_plugins.documents.record.IndexLock`). No model is loaded
unless something is to be embedded.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from tqdm.auto import tqdm

from ...documents.record import ChunkSettings, IndexLock, RecordStore, record_path
from ...encoder import wants_progress
from .changing import delete_records
from .embedding_function import QZhouEmbeddingFunction
from .lexical_side import LexicalSide
from .records import Record, record_batches
from .sync_plan import FileChange, SyncPlan, files_to_sync, plan_sync, stored_sources
from .writing import write_batch


class Target(Protocol):
    """What a sync writes through: a :class:`~.collection.QZhouCollection` (its writes keep the
    lexical index in step, and its embedding function loads the model on first use)."""

    client: ClientAPI
    collection: Collection
    lexical: LexicalSide
    embedding_function: QZhouEmbeddingFunction

    @property
    def name(self) -> str: ...


GROUP_CHUNKS = 256
"""New chunks embedded and written per step (several small files together)."""
PAUSE_VARIABLE = "QZHOU_PLUGINS_TEST_PAUSE_AT"
"""Tests name a step here (``added``, ``deleted``, ``removed``): the sync says so and waits to be killed."""


@dataclass(frozen=True)
class SyncSummary:
    """What a sync did (or, with ``dry_run``, would do); files by their ``source`` name."""

    added: tuple[str, ...]
    replaced: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    """Files not synced, with why."""
    empty: tuple[str, ...]
    """Files with no text (counted among the others too)."""
    warnings: tuple[str, ...]
    """Files read only in part (a PDF's scanned pages: no OCR), each warning naming the file."""
    not_read: str | None
    """``skipped 3 files: 2 .png, 1 .xlsx (kinds no reader takes)``, or None."""
    chunks_added: int
    """Chunks written: embedded, or stored with a vector their text already had."""
    chunks_reused: int
    """Of those, the ones whose vector was reused rather than embedded."""
    chunks_removed: int
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)

    def line(self) -> str:
        """``added 2, replaced 1, removed 1, unchanged 5, skipped 0 file(s); 9 chunk(s) added, ...``."""
        files = (
            f"added {len(self.added)}, replaced {len(self.replaced)}, removed {len(self.removed)}, "
            f"unchanged {len(self.unchanged)}, skipped {len(self.skipped)} file(s)"
        )
        reused = f" ({self.chunks_reused} with the vector of an earlier chunk)" if self.chunks_reused else ""
        chunks = f"{self.chunks_added} chunk(s) added{reused}, {self.chunks_removed} removed"
        return f"{'would have ' if self.dry_run else ''}{files}; {chunks}"


def sync(
    collection: Target,
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    settings: ChunkSettings,
    keep_missing: bool = False,
    dry_run: bool = False,
    skip_unreadable: bool = False,
    show_progress: bool | None = None,
) -> SyncSummary:
    """:meth:`QZhouCollection.sync`: plan from Chroma and the records, then write in a safe order."""
    found, folders = files_to_sync([paths] if isinstance(paths, (str, os.PathLike)) else list(paths))
    root = collection.lexical.root
    with IndexLock(None if dry_run else root, collection.name):
        path = None if root is None else record_path(root, collection.name)
        store = RecordStore(None if path is None or (dry_run and not path.exists()) else path)
        try:
            records = store.load()
            stored = stored_sources(collection.collection)
            plan = plan_sync(found.files, folders, records, stored, settings, keep_missing=keep_missing,
                             skip_unreadable=skip_unreadable, named=found.named)  # fmt: skip
            plan.not_read = found.skipped_line()
            if dry_run:
                return _summary(plan, sum(change.new_ids for change in plan.changes), 0, dry_run=True)
            added, reused = _apply(collection, plan, store, show_progress)
        finally:
            store.close()
    return _summary(plan, added, reused, dry_run=False)


def _summary(plan: SyncPlan, added: int, reused: int, *, dry_run: bool) -> SyncSummary:
    def kind(name: str) -> tuple[str, ...]:
        return tuple(change.source for change in plan.changes if change.kind == name and not change.skipped)

    removed = sum(len(ids) for ids in plan.removed.values()) + sum(len(c.old_ids) for c in plan.changes)
    return SyncSummary(
        added=kind("added"),
        replaced=kind("replaced"),
        removed=tuple(sorted(plan.removed)),
        unchanged=kind("unchanged"),
        skipped=tuple(plan.skipped),
        empty=tuple(plan.empty),
        warnings=tuple(plan.warnings),
        not_read=plan.not_read,
        chunks_added=added,
        chunks_reused=reused,
        chunks_removed=removed,
        dry_run=dry_run,
    )


def _apply(
    collection: Target, plan: SyncPlan, store: RecordStore, show_progress: bool | None
) -> tuple[int, int]:
    """Write the plan: each group of changed files added, then their old chunks removed, then recorded."""
    total = sum(len(change.chunks) for change in plan.changes)
    show = wants_progress(show_progress, total)
    added = reused = 0
    with tqdm(total=total, desc=f"Indexing into {collection.name}", unit="chunk", disable=not show) as bar:
        for group in _groups([c for c in plan.changes if c.chunks or c.old_ids]):
            written, with_vectors = _add_group(collection, group)
            added, reused = added + written, reused + with_vectors
            _pause("added")
            _delete(collection, sorted(set().union(*(change.old_ids for change in group))))
            _pause("deleted")
            store.put(change.record for change in group if change.record is not None)
            bar.update(sum(len(change.chunks) for change in group))
    for ids in plan.removed.values():
        _delete(collection, sorted(ids))
    _pause("removed")
    store.remove(plan.removed_paths)
    store.put(c.record for c in plan.changes if c.record is not None and not (c.chunks or c.old_ids))
    return added, reused


def _groups(changes: list[FileChange]) -> Iterator[list[FileChange]]:
    group: list[FileChange] = []
    size = 0
    for change in changes:
        group.append(change)
        size += len(change.chunks)
        if size >= GROUP_CHUNKS:
            yield group
            group, size = [], 0
    if group:
        yield group


def _add_group(collection: Target, group: list[FileChange]) -> tuple[int, int]:
    """Add the group's new chunks; those whose text an old chunk of the group had take its vector."""
    chunks = [chunk for change in group for chunk in change.chunks]
    if not chunks:
        return 0, 0
    vectors = _old_vectors(collection, sorted(set().union(*(change.old_ids for change in group))))
    (records,) = record_batches([c.text for c in chunks], [c.metadata for c in chunks], None, len(chunks))
    records = [_with_vector(record, vectors.get(record.text or "")) for record in records]
    result = write_batch(
        collection.client, collection.collection, records, _embedder(collection), collection.lexical
    )
    return result.added, sum(1 for record in records if record.vector is not None)


def _old_vectors(collection: Target, ids: list[str]) -> dict[str, Any]:
    """The stored vector of each text among ``ids`` (about to be removed), by text."""
    if not ids:
        return {}
    found = collection.collection.get(ids=ids, include=["documents", "embeddings"])
    documents, embeddings = found["documents"] or [], found["embeddings"]
    if embeddings is None:
        return {}
    return {text: vector for text, vector in zip(documents, embeddings, strict=False) if text}


def _with_vector(record: Record, vector: Any) -> Record:
    return record if vector is None else replace(record, vector=vector)


def _embedder(collection: Target) -> Any:
    """Embeds documents on first call only: a sync that embeds nothing never loads the model."""
    return lambda texts: collection.embedding_function.embed_documents(texts, show_progress=False)


def _delete(collection: Target, ids: list[str]) -> None:
    step = collection.client.get_max_batch_size()
    for start in range(0, len(ids), step):
        chunk = ids[start : start + step]
        delete_records(collection.client, collection.collection, chunk, None, None, collection.lexical)


def _pause(step: str) -> None:
    """For the crash tests: stop at ``step`` until killed, when :data:`PAUSE_VARIABLE` names it."""
    if os.environ.get(PAUSE_VARIABLE) == step:
        print(f"paused at {step}", file=sys.stderr, flush=True)
        time.sleep(3600)
