"""Changing stored records: upsert (replace what is there, add the rest) and delete, lexical index in step.

:meth:`QZhouCollection.add` never replaces a stored record (an id already there is skipped, and
reported as a conflict if its text differs): running an ingestion again must change nothing.
Replacing is asked for by name, with :meth:`QZhouCollection.upsert`: each id given then holds exactly
the text, the metadata and the vector of that text given now. The metadata is replaced, not merged:
Chroma's own upsert merges metadata keys, so the keys a record no longer has are removed here. A
record whose stored text and metadata already equal the ones given is left alone, not re-embedded.

Both write under the lock of :mod:`.writing`, which makes their counts exact on an embedded database,
and tell the collection's lexical index (:class:`.writing.LexicalSync`) before and after Chroma.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from ...documents.record import remove_record
from ...lexical.base import checked_ids
from .lexical_side import LexicalSide
from .opening import existing_collection
from .records import Record
from .writing import LexicalSync, record_vectors, write_lock


@dataclass(frozen=True)
class UpsertResult:
    """What :meth:`QZhouCollection.upsert` did.

    ``added``: ids that were not stored; ``updated``: ids stored with another text or metadata, now
    replaced (text, metadata and vector); ``unchanged``: ids stored with the same text and metadata,
    left as they were (not embedded again).
    """

    added: int
    updated: int
    unchanged: int = 0

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            added=self.added + other.added,
            updated=self.updated + other.updated,
            unchanged=self.unchanged + other.unchanged,
        )


def upsert_batch(
    client: ClientAPI,
    collection: Collection,
    batch: list[Record],
    embed: Callable[[list[str]], np.ndarray],
    lexical: LexicalSync | None,
) -> UpsertResult:
    """Store every record of ``batch`` (ids unique), replacing those stored with another text or metadata."""
    stored = stored_records(collection, [record.id for record in batch])
    changing = [record for record in batch if stored.get(record.id) != (record.text, record.metadata)]
    if not changing:
        return UpsertResult(added=0, updated=0, unchanged=len(batch))
    vectors = record_vectors(changing, embed)
    ids = [record.id for record in changing]
    with write_lock(client):
        present = stored_records(collection, ids)  # as of the write: another writer may have added some
        metadatas = [
            replacing(record.metadata, present.get(record.id, (None, None))[1]) for record in changing
        ]
        if lexical is not None:
            lexical.mark(ids)
        collection.upsert(
            ids=ids,
            documents=[record.text for record in changing],  # type: ignore[misc]
            metadatas=metadatas if any(m is not None for m in metadatas) else None,  # type: ignore[arg-type]
            embeddings=vectors,
        )
        if lexical is not None:
            lexical.added(ids, [record.text for record in changing])
    updated = sum(1 for id_ in ids if id_ in present)
    return UpsertResult(added=len(ids) - updated, updated=updated, unchanged=len(batch) - len(ids))


def replacing(new: Mapping[str, Any] | None, old: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The metadata to upsert so that a record holding ``old`` ends up holding ``new`` exactly.

    Chroma keeps the keys an upsert leaves out and removes those it sets to None.
    """
    gone = {key: None for key in (old or {}) if key not in (new or {})}
    merged = {**gone, **(new or {})}
    return merged or None


def stored_records(collection: Collection, ids: list[str]) -> dict[str, tuple[str | None, dict | None]]:
    """The stored (document, metadata) of each of ``ids`` that is in the collection."""
    found = collection.get(ids=list(dict.fromkeys(ids)), include=["documents", "metadatas"])
    documents = found["documents"] or [None] * len(found["ids"])
    metadatas = found["metadatas"] or [None] * len(found["ids"])
    return {
        id_: (document, dict(metadata) if metadata else None)
        for id_, document, metadata in zip(found["ids"], documents, metadatas, strict=True)
    }


def delete_records(
    client: ClientAPI,
    collection: Collection,
    ids: Any,
    where: Mapping[str, Any] | None,
    where_document: Mapping[str, Any] | None,
    lexical: LexicalSync | None,
) -> int:
    """Delete the records of ``ids`` that match the filters (every one given must hold); how many went."""
    if ids is None and not where and not where_document:
        raise ValueError(
            "delete needs ids=, where= or where_document= (to delete every record, delete the collection: "
            "QZhouCollection.delete_collection)"
        )
    wanted = None if ids is None else checked_ids(ids)
    if wanted == []:
        return 0
    with write_lock(client):
        found = collection.get(
            ids=wanted,
            where=dict(where) if where else None,
            where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
            include=[],
        )["ids"]
        step = client.get_max_batch_size()
        for start in range(0, len(found), step):
            chunk = found[start : start + step]
            if lexical is not None:
                lexical.mark(chunk)
            collection.delete(ids=chunk)
            if lexical is not None:
                lexical.deleted(chunk)
    return len(found)


def remove_collection(client: ClientAPI, name: str, lexical_root: Path | None) -> bool:
    """Delete collection ``name`` and then its lexical index; whether the collection was there."""
    with write_lock(client):
        existed = existing_collection(client, name) is not None
        if existed:
            client.delete_collection(name)
        LexicalSide(lexical_root, name, {}).remove()
        remove_record(lexical_root, name)
    return existed
