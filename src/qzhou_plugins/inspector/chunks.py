"""The document view: one chunk whole, with its id, its metadata and its neighbours in the same source.

``qzhou-plugins index`` records each chunk's ``source`` (the file) and its ``chunk`` number (and
``line`` for JSONL records), so the chunks before and after a hit are the ones of the same source
with the next numbers: read beside the hit, they show whether the answer was cut at a chunk border.
"""

from __future__ import annotations

from typing import Any

from ..cli.errors import UsageError

NEIGHBOURS = 2
"""Chunks shown on each side of the one opened."""

SOURCE_CHUNKS = 10_000
"""The most chunks of one source read to find the neighbours (a source larger than that is a corpus)."""


class ChunkNotFoundError(LookupError):
    """No chunk of that id in the collection."""


def document_view(collection: Any, chunk_id: str) -> dict[str, Any]:
    """The chunk ``chunk_id`` with its metadata, and its neighbours in the same source, in order."""
    if not isinstance(chunk_id, str) or not chunk_id:
        raise UsageError("a document view needs the chunk's id")
    found = collection.collection.get(ids=[chunk_id], include=["documents", "metadatas"])
    if not found["ids"]:
        raise ChunkNotFoundError(f"no chunk with id {chunk_id!r} in collection {collection.name!r}")
    metadata = dict((found["metadatas"] or [{}])[0] or {})
    return {
        "id": chunk_id,
        "collection": collection.name,
        "document": (found["documents"] or [""])[0] or "",
        "metadata": metadata,
        "neighbours": _neighbours(collection, chunk_id, metadata),
    }


def _neighbours(collection: Any, chunk_id: str, metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks of the same source around ``chunk_id`` (itself marked), ordered by line and chunk."""
    source = metadata.get("source")
    if source is None:
        return []
    same = collection.collection.get(
        where={"source": source}, include=["documents", "metadatas"], limit=SOURCE_CHUNKS
    )
    rows = sorted(
        zip(same["ids"], same["documents"] or [], same["metadatas"] or [], strict=False),
        key=lambda row: (_number(row[2], "line"), _number(row[2], "chunk"), row[0]),
    )
    place = next((i for i, row in enumerate(rows) if row[0] == chunk_id), 0)
    return [
        {"id": id_, "document": document or "", "metadata": dict(meta or {}), "current": id_ == chunk_id}
        for id_, document, meta in rows[max(0, place - NEIGHBOURS) : place + NEIGHBOURS + 1]
    ]


def _number(metadata: Any, key: str) -> float:
    value = (metadata or {}).get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else -1.0
