"""One reader per format behind one protocol: a file in, its text as sections out.

A section is a stretch of text with what the chunks cut from it record: its ``page`` (and
``page_label``) in a PDF, the ``heading`` it falls under in HTML or Word, the ``line`` and fields of
a JSON-lines record. Each reader imports its own library when it runs, so a folder of Markdown never
loads PDFium, and a missing library is an ImportError naming the extra that installs it.
"""

from __future__ import annotations

from pathlib import Path

from . import docx, html, jsonl, pdf, text
from .base import Reader, Reading, Section, missing_library

READERS: dict[str, Reader] = {
    ".txt": text.read_plain,
    ".md": text.read_markdown,
    ".jsonl": jsonl.read_records,
    ".pdf": pdf.read_pdf,
    ".html": html.read_html,
    ".htm": html.read_html,
    ".docx": docx.read_docx,
}
"""The reader of each suffix (lower case)."""
SUPPORTED_SUFFIXES = tuple(READERS)


def reader_for(file: Path) -> Reader:
    """The reader of ``file``'s kind (by its suffix, in any case)."""
    return READERS[file.suffix.lower()]


__all__ = ["READERS", "SUPPORTED_SUFFIXES", "Reader", "Reading", "Section", "missing_library", "reader_for"]
