"""JSON-lines files: one JSON object per line, each problem named by its file and line.

Evaluation sets (BEIR corpora and queries, reranking samples) and the documents the CLI indexes are
all JSON lines. Reading them is one loop, here, so that a bad line is reported the same way
wherever it is met, and so that an error in a document the CLI indexes is not dressed up as an
evaluation error. The module needs nothing beyond the standard library.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class JSONLinesError(ValueError):
    """A JSON-lines text is malformed or unreadable; the message names the file and the line."""


def iter_json_objects(
    lines: Iterable[str], source: str | Path, *, expected: str = "a JSON object"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line, naming the bad line in a :class:`JSONLinesError`.

    Line numbers count from 1 and include blank lines, so that they match what an editor shows.
    ``expected`` describes the object in the error for a line that is valid JSON of another kind.
    """
    for line_number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise JSONLinesError(f"{source}:{line_number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise JSONLinesError(f"{source}:{line_number}: expected {expected}")
        yield line_number, record


def json_objects_in_text(
    text: str, source: str | Path, *, expected: str = "a JSON object"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`iter_json_objects` over a text already in memory, split into lines as a file would be.

    ``str.splitlines`` would also split at characters that JSON allows inside a string (U+2028,
    U+0085, ...), breaking a valid record in two; reading through :class:`io.StringIO` splits at
    ``\\n``, ``\\r\\n`` and ``\\r`` only, exactly as :func:`read_json_objects` does.
    """
    return iter_json_objects(io.StringIO(text, newline=None), source, expected=expected)


def read_json_objects(
    path: str | Path, *, expected: str = "a JSON object"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`iter_json_objects` over a UTF-8 file (a byte-order mark is allowed), read as it goes.

    A file that cannot be read, or is not UTF-8, is a :class:`JSONLinesError` that names it.
    """
    source = Path(path)
    try:
        with source.open(encoding="utf-8-sig") as handle:
            yield from iter_json_objects(handle, source, expected=expected)
    except UnicodeDecodeError:
        raise JSONLinesError(_not_utf8(source)) from None
    except OSError as error:
        raise JSONLinesError(f"{source}: cannot be read ({error.strerror or error})") from None


def _not_utf8(path: Path) -> str:
    """The message for a file that is not UTF-8, with the line and byte of the first bad byte.

    A decoding stream only knows the offset in its buffer, so the file is decoded again whole (on
    this error path only).
    """
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        return f"{path}:{line}: not UTF-8 text ({error.reason} at byte {error.start})"
    return f"{path}: not UTF-8 text"  # pragma: no cover - the stream said it is not
