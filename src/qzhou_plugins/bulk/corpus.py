"""Which source a path is, and the check of the whole corpus before any model work.

:func:`open_source` tells the kinds apart: a ``.jsonl`` file is a BEIR-style corpus, a ``.parquet``
file or a folder of them a parquet corpus, a ``.txt`` or ``.md`` file or a folder of documents a
documents source (chunked as ``index`` chunks them). A folder holding both parquet files and
documents, or a BEIR folder (whose ``queries.jsonl`` would be embedded as documents), is refused
with what to give instead rather than guessed at.

:func:`scan_corpus` reads the whole source once before any model is loaded: a line that is not
JSON, a missing or duplicated id, a missing text field or a text with nothing to embed is an error
naming its file and line (or row) and its id, rather than a failure an hour into a GPU job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..documents import CHUNK_OVERLAP, CHUNK_SIZE, SUPPORTED_SUFFIXES, DocumentError, find_files
from ..validation import validate_texts
from .documents_source import DocumentsSource
from .ids import IdHashes, hash_ids, is_in
from .sources import CorpusError, JsonLinesSource, ParquetSource, Rows, Source, parquet_files

DEFAULT_ID_FIELD = "_id"
DEFAULT_TEXT_FIELDS = ("title", "text")
_DOCUMENT_FILES = ", ".join(SUPPORTED_SUFFIXES)


def open_source(
    path: str | Path,
    *,
    id_field: str = DEFAULT_ID_FIELD,
    text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
    metadata_fields: Sequence[str] | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
) -> Source:
    """The source for ``path``: a corpus of records (JSON lines, parquet) or documents to chunk.

    The id, text and metadata fields name the fields of records (metadata: by default the other
    fields and the title); the chunk size and overlap (default: those of ``index``) cut documents,
    whose metadata is what ``index`` records. Options of the other kind are refused rather than ignored.
    """
    source = Path(path)
    if isinstance(text_fields, str):
        raise TypeError("text_fields must be a list of field names, not a single string")
    kind = source_kind(source)
    if kind == DocumentsSource.kind:
        if id_field != DEFAULT_ID_FIELD or tuple(text_fields) != DEFAULT_TEXT_FIELDS:
            raise ValueError(
                f"{source}: documents have no id or text fields (each chunk's id is its content id, as "
                "index gives it); leave id_field and text_fields out"
            )
        if metadata_fields is not None:
            raise ValueError(
                f"{source}: a chunk of documents carries the metadata index records for it (source, "
                "line, chunk); leave metadata_fields out"
            )
        return DocumentsSource(
            source,
            CHUNK_SIZE if chunk_size is None else chunk_size,
            CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap,
        )
    if chunk_size is not None or chunk_overlap is not None:
        raise ValueError(
            f"{source}: chunk_size and chunk_overlap cut documents ({_DOCUMENT_FILES} files), "
            f"not the rows of a {kind} corpus; leave them out"
        )
    if kind == JsonLinesSource.kind:
        return JsonLinesSource(source, id_field, text_fields, metadata_fields)
    return ParquetSource(source, id_field, text_fields, metadata_fields)


def source_kind(path: Path) -> str:
    """``jsonl``, ``parquet`` or ``documents``; a path that is none of them, or is ambiguous, is refused."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return JsonLinesSource.kind
        if suffix == ".parquet":
            return ParquetSource.kind
        if suffix in SUPPORTED_SUFFIXES:
            return DocumentsSource.kind
    if path.is_dir():
        return _folder_kind(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    raise CorpusError(
        f"{path}: expected a .jsonl corpus, a .parquet file, a document ({_DOCUMENT_FILES}) or a folder "
        "of parquet files or of documents"
    )


def _folder_kind(folder: Path) -> str:
    """A folder of parquet files or of documents, never both (which one was meant cannot be known)."""
    tables = parquet_files(folder)
    try:
        documents = find_files([folder])
    except DocumentError:
        documents = []
    if tables and documents:
        raise CorpusError(
            f"{folder}: holds both .parquet files ({len(tables)}) and documents ({len(documents)} "
            f"{_DOCUMENT_FILES} files), so which to embed is ambiguous; give a folder of one kind"
        )
    if tables:
        return ParquetSource.kind
    if (folder / "corpus.jsonl").is_file() and (folder / "queries.jsonl").is_file():
        raise CorpusError(
            f"{folder}: a BEIR folder (corpus.jsonl, queries.jsonl), which would be embedded as documents, "
            f"queries and all; give its corpus: {folder / 'corpus.jsonl'}"
        )
    if documents:
        return DocumentsSource.kind
    raise CorpusError(f"{folder}: no .parquet files or documents ({_DOCUMENT_FILES}) in this folder")


# -- the check before any model work ------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """What the scan learned: how many rows, and the sorted hashes of their ids."""

    rows: int
    ids: np.ndarray


def scan_corpus(source: Source) -> Corpus:
    """Read the whole source once and refuse it, naming the row, if any row cannot be embedded."""
    hashes = IdHashes()
    rows = 0
    for batch in source.batches():
        _check_texts(batch)
        hashes.add(hash_ids(batch.ids))
        rows += len(batch)
    if rows == 0:
        raise CorpusError(f"{source.path}: the corpus is empty (no rows to embed)")
    repeated = hashes.repeated()
    if len(repeated):
        _name_duplicate(source, repeated)
    return Corpus(rows=rows, ids=hashes.sorted)


def _check_texts(batch: Rows) -> None:
    """The core's text validation, its error turned into one naming the row and its id."""
    try:
        validate_texts(batch.texts, what="texts")
    except (TypeError, ValueError):
        for ident, text, place in zip(batch.ids, batch.texts, batch.places, strict=True):
            try:
                validate_texts([text], what="text")
            except (TypeError, ValueError) as error:
                raise CorpusError(f"{place}: id {ident!r} has nothing to embed ({error})") from None
        raise


def _name_duplicate(source: Source, repeated: np.ndarray) -> None:
    """A second pass to name the first repeated id and both of its places (errors only)."""
    first_place: dict[str, str] = {}
    for batch in source.batches():
        suspects = is_in(hash_ids(batch.ids), repeated)
        for ident, place, suspect in zip(batch.ids, batch.places, suspects, strict=True):
            if not suspect:
                continue
            if ident in first_place:
                raise CorpusError(f"{place}: duplicate id {ident!r} (first at {first_place[ident]})")
            first_place[ident] = place
    raise RuntimeError(  # distinct ids with one 64-bit hash: vanishingly rare, never silently mixed
        f"two different ids of {source.path} share a 64-bit hash ({sorted(first_place)[:4]}); "
        "rename one of them"
    )
