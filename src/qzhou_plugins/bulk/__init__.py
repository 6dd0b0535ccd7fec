"""Bulk embedding of a whole corpus into parquet: in this process, or on Ray Data across GPUs.

``embed_corpus(source, out, model=...)`` reads a JSON-lines or parquet corpus, or a folder of
documents chunked as ``qzhou-plugins index`` chunks them, embeds every row
with the shared encoder (or a pool of Ray actors, one model each) and writes parquet shards with
the fingerprint of the vectors in their schema metadata and each row's metadata beside its vector
(what ``index`` records for a chunk, a record's other fields), plus a manifest. A run killed at any
point is completed by running it again; a run with another model or instruction into the same
folder is refused. ``export_quantized`` writes int8 or binary codes of a finished output, and
``iter_vectors`` streams one back (what a vector store loader builds on).

Ray is an optional extra (``qzhou-plugins[ray]``), imported only when a job asks for it. The names
below are imported on first use: the ``embed`` command's flags need none of numpy or pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .choices import DEFAULT_SHARD_ROWS, EXPORT_PRECISIONS, SIDES, STORAGE_DTYPES
    from .formats import calibration_ranges, dequantize, export_quantized, quantize
    from .job import BulkResult, embed_corpus
    from .load import VectorBatch, iter_vectors, read_fingerprint, read_manifest
    from .output import MANIFEST_NAME, OutputError, OutputMismatchError
    from .sources import CorpusError

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        ".choices": ("DEFAULT_SHARD_ROWS", "EXPORT_PRECISIONS", "SIDES", "STORAGE_DTYPES"),
        ".formats": ("calibration_ranges", "dequantize", "export_quantized", "quantize"),
        ".job": ("BulkResult", "embed_corpus"),
        ".load": ("VectorBatch", "iter_vectors", "read_fingerprint", "read_manifest"),
        ".output": ("MANIFEST_NAME", "OutputError", "OutputMismatchError"),
        ".sources": ("CorpusError",),
    },
)

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "EXPORT_PRECISIONS",
    "MANIFEST_NAME",
    "SIDES",
    "STORAGE_DTYPES",
    "BulkResult",
    "CorpusError",
    "OutputError",
    "OutputMismatchError",
    "VectorBatch",
    "calibration_ranges",
    "dequantize",
    "embed_corpus",
    "export_quantized",
    "iter_vectors",
    "quantize",
    "read_fingerprint",
    "read_manifest",
]
