"""A folder of documents as a bulk source: chunked as ``qzhou-plugins index`` chunks them, with its ids.

``index`` is the way into Chroma for a folder of notes; ``embed`` is the way for a folder too large to
embed on one machine. The two must agree chunk for chunk, so that vectors made on a cluster and
loaded into a collection are the records ``index`` would have written: the files are found, read
and cut by :mod:`qzhou_plugins.documents` (the one reader both use), and each chunk's id is its
content id (:attr:`~qzhou_plugins.documents.Chunk.id`), the id ``index`` stores it under.

The id hashes the chunk's metadata, whose ``source`` is the file's path relative to the working
directory: run ``embed`` from where ``index`` would run for the ids to agree. The output holds ids,
vectors and that metadata (source, line, chunk: what ``index`` records, checked as ``add`` checks
it), and with ``text_column`` the text, so ``load`` stores the records ``index`` would have.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..documents import (
    BinaryDocumentError,
    BrokenDocumentError,
    Chunk,
    DocumentError,
    chunk_place,
    find_documents,
    read_chunks,
    read_file,
    source_name,
)
from ..jsonlines import JSONLinesError
from ..validation import check_count
from .row_metadata import MetadataError, checked_text
from .sources import SCAN_ROWS, CorpusError, Rows, Source, without_done

logger = logging.getLogger(__name__)


def check_chunking(chunk_size: Any, chunk_overlap: Any) -> None:
    """A chunk size of at least one character, and an overlap from zero to less than the size."""
    check_count(chunk_size, what="chunk_size", allow_none=False, minimum=1)
    check_count(chunk_overlap, what="chunk_overlap", allow_none=False, minimum=0)
    if chunk_overlap >= chunk_size:
        raise ValueError(f"chunk_overlap ({chunk_overlap}) must be less than chunk_size ({chunk_size})")


class DocumentsSource(Source):
    """Documents of every kind ``index`` reads (a file, or a folder walked as ``index`` walks it)."""

    kind = "documents"

    def __init__(self, path: Path, chunk_size: int, chunk_overlap: int) -> None:
        check_chunking(chunk_size, chunk_overlap)
        super().__init__(path)
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        try:
            found = find_documents([path])
        except DocumentError as error:
            raise CorpusError(str(error)) from None
        self.files = [(file, source_name(file)) for file in found.files]
        """Each file with the source name its chunks record (the driver's working directory decides)."""
        self.named = found.named
        """The file given, when ``path`` is one: encrypted or damaged, it is an error, not a warning."""
        if found.skipped_line():
            logger.warning("%s: %s", path, found.skipped_line())
        self._warned: set[Path] = set()

    def batches(self, size: int = SCAN_ROWS) -> Iterator[Rows]:
        rows = Rows()
        for file, name in self.files:
            for chunk in self._chunks(file, name):
                add_chunk(rows, chunk)
                if len(rows) >= size:
                    yield rows
                    rows = Rows()
        if len(rows):
            yield rows

    def _chunks(self, file: Path, name: str) -> list[Chunk]:
        """The chunks of one file; a binary, encrypted or damaged file in the folder gives none, and a
        PDF's scanned pages are left out, each with one warning (as ``index`` skips them)."""
        try:
            found = read_file(file, self.chunk_size, self.chunk_overlap, source=name)
        except BrokenDocumentError as error:
            if file.resolve() in self.named:
                raise CorpusError(str(error)) from None
            self._warn(file, [str(error)])
            return []
        except BinaryDocumentError as error:
            self._warn(file, [str(error)])
            return []
        except (DocumentError, JSONLinesError) as error:  # a bad line of a .jsonl document
            raise CorpusError(str(error)) from None
        self._warn(file, found.warnings)
        return found.chunks

    def _warn(self, file: Path, warnings: list[str]) -> None:
        """Log a file's warnings once, however often the file is read (a scan, then the run)."""
        if warnings and file not in self._warned:
            self._warned.add(file)
            for warning in warnings:
                logger.warning("%s", warning)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap}

    def ray_dataset(self, ray_data: Any, done: np.ndarray) -> Any:
        """One item per file (its absolute path and source name), chunked in Ray's tasks."""
        items = [{"path": str(file.resolve()), "source": name} for file, name in self.files]
        return ray_data.from_items(items).map_batches(
            chunk_files,
            batch_format="numpy",
            batch_size=1,
            fn_kwargs={"chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap, "done": done},
        )


def add_chunk(rows: Rows, chunk: Chunk) -> None:
    """Append a chunk's row: the id ``index`` gives it, its text, and the metadata ``index`` records."""
    place = chunk_place(chunk.metadata)
    rows.ids.append(chunk.id)
    rows.texts.append(chunk.text)
    rows.places.append(place)
    try:
        rows.metadata.append(checked_text(chunk.metadata, place))
    except MetadataError as error:
        raise CorpusError(str(error)) from None


def chunk_files(
    batch: dict[str, np.ndarray], *, chunk_size: int, chunk_overlap: int, done: np.ndarray
) -> dict[str, np.ndarray]:
    """The chunks of files read by Ray Data (already checked by the scan), minus ``done``."""
    rows = Rows()
    paths: Sequence[str] = batch["path"]
    for path, source in zip(paths, batch["source"], strict=True):
        try:
            chunks = read_chunks(Path(path), chunk_size, chunk_overlap, source=str(source))
        except (BinaryDocumentError, BrokenDocumentError):
            continue  # warned about by the scan
        for chunk in chunks:
            add_chunk(rows, chunk)
    return without_done(rows, done)
