"""Reading a bulk output back: its manifest, its fingerprint, and its vectors in batches.

This is what a vector store loader builds on (``QZhouCollection.add_precomputed`` and
``qzhou-plugins load``): it streams the shards in batches of float32 rows, so that loading a
corpus never needs all of its vectors in memory, and hands over the fingerprint with every batch,
so that the loader can refuse vectors of another model or instruction before it writes any.
Only ``pyarrow`` is needed; no model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .output import (
    COMPARED_KEYS,
    MANIFEST_NAME,
    METADATA_COLUMN,
    OutputError,
    differences,
    shard_fingerprint,
)


@dataclass(frozen=True)
class VectorBatch:
    """Rows of a bulk output: ids, float32 vectors, the texts if the output kept them, the fingerprint,
    and each row's metadata (None for the whole batch: its shard, from an older output, has none)."""

    ids: list[str]
    vectors: np.ndarray
    texts: list[str] | None
    fingerprint: dict[str, Any]
    metadatas: list[dict[str, Any] | None] | None = None
    shard: str = ""
    """The shard the rows come from, and how many of its rows come before them: :meth:`place`."""
    before: int = 0

    def place(self, row: int) -> str:
        """Where row ``row`` of the batch is, for an error message: ``SHARD row N`` (from 1)."""
        return f"{self.shard} row {self.before + row + 1}"


def read_manifest(output: str | Path) -> dict[str, Any]:
    """The manifest of a finished output; an unfinished or foreign folder is an error that says so."""
    folder = Path(output)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        if not folder.is_dir():
            raise OutputError(f"{folder}: no such folder")
        raise OutputError(
            f"{folder} has no {MANIFEST_NAME}: the embedding run has not finished; rerun it with the same "
            "arguments to complete it"
        )
    manifest: dict[str, Any] = json.loads(path.read_text("utf-8"))
    if not manifest.get("complete") or "fingerprint" not in manifest:
        raise OutputError(f"{path} does not describe a finished bulk output")
    return manifest


def read_fingerprint(output: str | Path) -> dict[str, Any]:
    """The fingerprint of a finished output: model, dimension, side, exact prefixes, and the rest."""
    return dict(read_manifest(output)["fingerprint"])


def iter_vectors(output: str | Path, *, batch_size: int = 1024) -> Iterator[VectorBatch]:
    """The rows of a finished output, ``batch_size`` at a time, as float32 (float16 is widened).

    Every shard's fingerprint is checked against the manifest's before its rows are handed out.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    folder = Path(output)
    manifest = read_manifest(folder)
    fingerprint = dict(manifest["fingerprint"])
    for entry in manifest["shards"]:
        shard = folder / entry["file"]
        if not shard.is_file():
            raise OutputError(f"{shard} is listed in the manifest but missing")
        found = differences(fingerprint, shard_fingerprint(shard), COMPARED_KEYS)
        if found:
            raise OutputError(f"{shard} differs from the manifest: {'; '.join(found)}")
        parquet = pq.ParquetFile(shard)
        if not pa.types.is_floating(parquet.schema_arrow.field("embedding").type.value_type):
            raise OutputError(f"{shard} holds quantized codes, not vectors: read it with pyarrow")
        columns = ["id", "embedding", *(["text"] if fingerprint.get("text_column") else [])]
        if METADATA_COLUMN in parquet.schema_arrow.names:
            columns.append(METADATA_COLUMN)
        before = 0
        for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
            yield _vector_batch(batch, fingerprint, str(shard), before)
            before += batch.num_rows


def _vector_batch(batch: Any, fingerprint: dict[str, Any], shard: str, before: int) -> VectorBatch:
    embedding = batch.column("embedding")
    flat = embedding.flatten().to_numpy(zero_copy_only=False)
    vectors = flat.reshape(len(embedding), int(fingerprint["dimension"])).astype(np.float32)
    names = batch.schema.names
    texts = batch.column("text").to_pylist() if "text" in names else None
    found = VectorBatch(batch.column("id").to_pylist(), vectors, texts, fingerprint, None, shard, before)
    if METADATA_COLUMN not in names:
        return found
    metadatas = [_parsed(text, found.place(row)) for row, text in enumerate(batch.column(METADATA_COLUMN))]
    return replace(found, metadatas=metadatas)


def _parsed(text: Any, place: str) -> dict[str, Any] | None:
    """A row's metadata from its JSON text (None: the row has none)."""
    value = text.as_py()
    if value is None:
        return None
    try:
        metadata = json.loads(value)
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict):
        raise OutputError(
            f"{place}: the metadata is not a JSON object ({value[:80]!r}); the output was altered"
        )
    return metadata
