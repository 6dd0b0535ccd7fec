"""Plain text and Markdown: the file is one section, UTF-8 (a byte-order mark allowed)."""

from __future__ import annotations

import codecs
from pathlib import Path

from ..errors import BinaryDocumentError, DocumentError, UnreadableDocumentError
from .base import Reading, Section


def read_plain(file: Path) -> Reading:
    return Reading([Section(read_text(file))])


def read_markdown(file: Path) -> Reading:
    return Reading([Section(read_text(file))], markdown=True)


def read_bytes(file: Path) -> bytes:
    """The file's bytes; an I/O error names the file as given."""
    try:
        return file.read_bytes()
    except OSError as error:
        raise UnreadableDocumentError(f"{file}: cannot be read ({error.strerror or error})") from None


def read_text(file: Path) -> str:
    """The file's text, UTF-8 (a byte-order mark is allowed); every failure names the file as given."""
    data = read_bytes(file)
    if b"\0" in data:
        raise BinaryDocumentError(
            f"{file}: skipped, a binary file (it holds NUL bytes; UTF-16 text must be converted to UTF-8)"
        )
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as error:
        at = bom + error.start
        line = data.count(b"\n", 0, at) + 1
        raise DocumentError(f"{file} is not UTF-8 text ({error.reason} at byte {at}, line {line})") from None
