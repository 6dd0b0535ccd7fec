"""The documents ``index`` and ``embed`` read, in the order the data flows: finding the files
(:mod:`.finding`), reading each with the reader of its format (:mod:`.readers`: text, Markdown, JSON
lines, PDF, HTML, Word), cutting what they read into chunks (:mod:`.chunking`), and the id each
chunk is stored under (:mod:`.ids`).

What a user hands to an indexer is rarely clean: a folder holds a binary file with a ``.txt`` name, an
encrypted PDF, a scanned one, a JSON-lines export with ``NaN`` (which Python's json module parses) or a
20-digit id. Each such problem is caught here, before a model is loaded or anything is written, and
named by its file (and line or page): a binary, encrypted or damaged file in a folder is skipped with a
warning, a page with no text layer is named in one, and anything else in a file the user gave is an
error, since indexing it would silently lose or change what they gave.

The package is neutral ground between the edges: ``qzhou-plugins index`` (the CLI), the bulk job's
documents source and the evaluation's BEIR reader all use it, and it imports none of them. Each
reader's library (PDFium, selectolax, python-docx) and LangChain's text splitter are imported when a
file of their kind is read or chunked.
"""

from __future__ import annotations

from .chunking import (
    CHUNK_OVERLAP,
    CHUNK_SIZE,
    CLAUSE_END,
    SENTENCE_END,
    Chunk,
    Documents,
    FileChunks,
    chunk_place,
    chunk_reading,
    read_chunks,
    read_documents,
    read_file,
)
from .errors import BinaryDocumentError, BrokenDocumentError, DocumentError, UnreadableDocumentError
from .fields import Metadata, join_text_fields, metadata_fields
from .finding import FoundFiles, find_documents, find_files, source_name
from .ids import content_id
from .readers import SUPPORTED_SUFFIXES, Reader, Reading, Section, reader_for
from .readers.text import read_text

__all__ = [
    "CHUNK_OVERLAP",
    "CHUNK_SIZE",
    "CLAUSE_END",
    "SENTENCE_END",
    "SUPPORTED_SUFFIXES",
    "BinaryDocumentError",
    "BrokenDocumentError",
    "Chunk",
    "DocumentError",
    "Documents",
    "FileChunks",
    "FoundFiles",
    "Metadata",
    "Reader",
    "Reading",
    "Section",
    "UnreadableDocumentError",
    "chunk_place",
    "chunk_reading",
    "content_id",
    "find_documents",
    "find_files",
    "join_text_fields",
    "metadata_fields",
    "read_chunks",
    "read_documents",
    "read_file",
    "read_text",
    "reader_for",
    "source_name",
]
