"""Word (.docx): paragraphs, headings and tables in document order, through python-docx.

Page headers, footers and text boxes are not read (chrome, or outside the body's flow). A ``.docx``
protected by a password is not a ZIP package but an OLE container: it is told apart from a damaged
file in the warning.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from ...validation import has_content
from ..errors import BrokenDocumentError
from ..fields import Metadata
from .base import Reading, Section, missing_library
from .text import read_bytes

_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
"""The start of an OLE compound file: what Word writes for an encrypted document (or an old .doc)."""


def read_docx(file: Path) -> Reading:
    """One section per heading (its text records ``heading``); the core title, if set, on every chunk."""
    try:
        import docx
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise missing_library("python-docx", error) from error
    if read_bytes(file)[:8] == _OLE:
        raise BrokenDocumentError(
            f"{file}: skipped, an encrypted (password-protected) Word file or an old .doc saved as .docx"
        )
    try:
        document = docx.Document(str(file))
    except (zipfile.BadZipFile, KeyError, ValueError, docx.opc.exceptions.PackageNotFoundError) as error:
        raise BrokenDocumentError(f"{file}: skipped, not a readable .docx (damaged; {error})") from None
    done: list[tuple[str | None, list[str]]] = [(None, [])]
    for block in document.iter_inner_content():
        if isinstance(block, docx.table.Table):
            done[-1][1].extend(_table_lines(block))
            continue
        text = block.text.strip()
        if not has_content(text):
            continue
        if _is_heading(block):
            done.append((text, []))
        done[-1][1].append(text)
    sections = [
        Section("\n".join(lines), {"heading": heading} if heading else {}) for heading, lines in done if lines
    ]
    title = (document.core_properties.title or "").strip()
    metadata: Metadata = {"title": title} if title else {}
    return Reading(sections, metadata=metadata)


def _is_heading(paragraph: Any) -> bool:
    name = paragraph.style.name if paragraph.style is not None else ""
    return name.startswith("Heading") or name == "Title"


def _table_lines(table: Any) -> list[str]:
    """One line per row, its cells joined by `` | `` (a merged cell once, not once per grid column)."""
    lines = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        line = " | ".join(cells).strip(" |")
        if has_content(line):
            lines.append(line)
    return lines
