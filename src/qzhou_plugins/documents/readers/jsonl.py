"""JSON lines: every line a record with a ``text`` field; its other fields become the chunks' metadata."""

from __future__ import annotations

from pathlib import Path

from ...jsonlines import json_objects_in_text
from ...validation import has_content
from ..errors import DocumentError
from ..fields import check_unicode, metadata_fields
from .base import Reading, Section
from .text import read_text


def read_records(file: Path) -> Reading:
    """One section per line (its ``line`` number and fields as metadata), each cut on its own."""
    sections: list[Section] = []
    expected = "a JSON object with a 'text' field"
    for line_number, record in json_objects_in_text(read_text(file), file, expected=expected):
        where = f"{file}:{line_number}"
        text = record.pop("text", None)
        if not isinstance(text, str) or not has_content(text):
            raise DocumentError(f"{where}: the 'text' field is missing or has no visible text")
        check_unicode(text, where, "the 'text' field")
        sections.append(Section(text, {**metadata_fields(record, where), "line": line_number}))
    return Reading(sections, cut="records")
