"""A record's fields as chunk metadata, and a corpus record's text, checked where the file is known.

A JSON-lines export carries ``NaN`` (which Python's json module parses) or a 20-digit id; each such
value is refused here, naming the file, line and field, since storing it would silently change it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from ..metadata import INT64_MAX, INT64_MIN, check_metadata
from ..validation import find_lone_surrogate
from .errors import DocumentError

Metadata = dict[str, str | int | float | bool]

OUR_KEYS = ("source", "line", "chunk")
"""The keys a chunk's metadata adds to a record's own fields."""
_RESERVED_PREFIX = "chroma:"
"""Chroma reserves metadata keys starting with this (``chroma:document``)."""


def join_text_fields(values: Iterable[str]) -> str:
    """The text of a corpus record: its fields (title, then text) joined with a space, stripped.

    This is how BEIR and MTEB embed a corpus, so the evaluation and the bulk job both call it: vectors
    made by ``embed`` are the ones ``eval retrieval`` would make. A record without a title gives its
    text alone, not one with a leading space.
    """
    return " ".join(values).strip()


def metadata_fields(record: dict[str, Any], where: str, *, ours: Sequence[str] = OUR_KEYS) -> Metadata:
    """A record's fields as Chroma metadata: scalars as they are, anything else as JSON text.

    A field named like one of ``ours`` (the keys a chunk's metadata adds: ``source``, ``line``,
    ``chunk``) or like Chroma's reserved ``chroma:`` keys is kept as ``record_<name>``; a record that
    also has a field of that name is refused, as one of the two would be lost. A value Chroma would
    change (NaN and infinities are stored as nothing, integers beyond 64 bits as floats) is refused,
    naming ``where`` and the field; so is anything else ``QZhouCollection.add`` would refuse (a key
    starting with ``#`` or ``$``), here, where the message can name the file and line.
    """
    fields: Metadata = {}
    given: dict[str, str] = {}  # the name each field is stored under -> the field's own name
    for key, value in record.items():
        if not key.strip():
            raise DocumentError(f"{where}: a field has an empty name ({key!r}); Chroma needs a name")
        check_unicode(key, where, f"the field name {key!r}")
        _check_value(value, where, key)
        reserved = key in ours or key.startswith(_RESERVED_PREFIX)
        name = f"record_{key}" if reserved else key
        if name in given:
            raise DocumentError(
                f"{where}: fields {given[name]!r} and {key!r} would both be stored as {name!r} (one would be "
                "lost); rename one"
            )
        given[name] = key
        if isinstance(value, (str, int, float, bool)):
            fields[name] = value
        else:
            fields[name] = json.dumps(value, ensure_ascii=False)
    try:
        check_metadata(fields, f"{where}: metadata")  # the rules of QZhouCollection.add, named here
    except (TypeError, ValueError) as error:
        raise DocumentError(str(error)) from None
    return fields


def _check_value(value: Any, where: str, key: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise DocumentError(
            f"{where}: field {key!r} is {json.dumps(value)}, not a number Chroma can store (it would be "
            "dropped); give a finite number, or quote it to keep it as text"
        )
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise DocumentError(
            f"{where}: field {key!r} is {value}, beyond the 64-bit integers Chroma stores (it would "
            "become a float that no filter finds); quote it to keep it as text"
        )
    if isinstance(value, (list, dict)):
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise DocumentError(
                f"{where}: field {key!r} holds NaN or Infinity, which JSON text cannot carry"
            ) from None
        check_unicode(text, where, f"field {key!r}")
    elif isinstance(value, str):
        check_unicode(value, where, f"field {key!r}")


def check_unicode(text: str, where: str, what: str) -> None:
    """Refuse a lone surrogate (a JSON escape such as ``\\ud800``): it cannot be stored as UTF-8."""
    at = find_lone_surrogate(text)
    if at is not None:
        raise DocumentError(
            f"{where}: {what} holds a lone surrogate {text[at]!r} at character {at} (not valid Unicode)"
        )
