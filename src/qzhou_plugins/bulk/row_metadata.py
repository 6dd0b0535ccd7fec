"""Each row's metadata in a bulk output: chosen, converted and checked as a collection will take it.

A row's metadata travels with its vector, so that ``load`` gives a collection the sources an
indexed one shows:

- a chunk of documents carries what ``index`` records for it (source path, line, chunk number);
- a record of a JSON-lines or parquet corpus carries its other fields: by default every field but
  the id and text fields, and the title (it names the record, as a path names a chunk); with
  ``metadata_fields``, the fields named (an empty list: none). Nested values become JSON text, as
  ``index`` keeps a ``.jsonl`` document's fields; names stay as given; a null or empty (``{}``,
  ``[]``) value is left out, as there is nothing to store. In parquet only the columns whose
  values Chroma can hold (strings, integers, floats, booleans, lists of them) are taken by
  default; the others are named in a warning.

Every row's metadata is checked by the rules ``QZhouCollection.add`` applies
(:mod:`qzhou_plugins.metadata`) while the corpus is scanned, before any model work, and a problem
names the file and line (or row). It is stored as JSON text, one string column (null: none), and
takes no part in the fingerprint: it does not change the vectors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..documents import DocumentError, metadata_fields
from ..metadata import check_metadata

logger = logging.getLogger(__name__)

TITLE_FIELD = "title"
"""Kept as metadata even when it is a text field: it names the record (BEIR's corpora have one)."""


class MetadataError(ValueError):
    """A row's metadata cannot be stored as it is; the message names the file and line (or row)."""


def default_fields(names: Iterable[str], id_field: str, text_fields: Sequence[str]) -> list[str]:
    """The fields a record carries as metadata when none are chosen: all but the id and the text."""
    return [name for name in names if name != id_field and (name not in text_fields or name == TITLE_FIELD)]


def metadata_text(values: Mapping[str, Any], place: str) -> str | None:
    """A record's metadata as the JSON text stored with its vector (None: it has none), checked."""
    present = {key: value for key, value in values.items() if not _empty(value)}
    if not present:
        return None
    try:
        fields = metadata_fields(present, place, ours=())
    except DocumentError as error:
        raise MetadataError(str(error)) from None
    return checked_text(fields, place)


def _empty(value: Any) -> bool:
    """None, ``{}`` or ``[]``: nothing to store (Chroma stores no None, and no empty list)."""
    return value is None or (isinstance(value, (dict, list)) and not value)


def checked_text(metadata: Mapping[str, Any], place: str) -> str:
    """``metadata`` as JSON text, once the rules of ``QZhouCollection.add`` accept it."""
    try:
        check_metadata(metadata, f"{place}: metadata")
    except (TypeError, ValueError) as error:
        raise MetadataError(str(error)) from None
    return json.dumps(metadata, ensure_ascii=False)


# -- parquet: which columns -----------------------------------------------------------------------------


def parquet_fields(
    files: Sequence[Path], id_field: str, text_fields: Sequence[str], chosen: Sequence[str] | None
) -> list[str]:
    """The metadata columns of a parquet corpus: ``chosen`` (each in every file, of a kind Chroma
    holds), or by default every column of such a kind in every file but the id and text columns."""
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(file) for file in files]
    if chosen is not None:
        for file, schema in zip(files, schemas, strict=True):
            for name in chosen:
                if name not in schema.names:
                    raise MetadataError(
                        f"{file}: no column {name!r} (has: {', '.join(sorted(schema.names))})"
                    )
                if not storable(schema.field(name).type):
                    raise MetadataError(
                        f"{file}: column {name!r} is {schema.field(name).type}, which Chroma cannot hold as "
                        "metadata (strings, integers, floats, booleans, lists of them); cast it, or leave "
                        "it out of the metadata fields"
                    )
        return list(chosen)
    common = [name for name in schemas[0].names if all(name in schema.names for schema in schemas)]
    candidates = default_fields(common, id_field, text_fields)
    kept = [name for name in candidates if all(storable(s.field(name).type) for s in schemas)]
    if left := [name for name in candidates if name not in kept]:
        logger.warning(
            "%s: column(s) %s left out of the metadata: Chroma holds strings, integers, floats, booleans "
            "and lists of them (cast a column to keep it)",
            files[0] if len(files) == 1 else files[0].parent,
            ", ".join(map(repr, left)),
        )
    return kept


def storable(kind: Any) -> bool:
    """Whether a parquet column's values become metadata Chroma holds (lists as JSON text)."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        return storable(kind.value_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _scalar(kind.value_type)
    return _scalar(kind)


def _scalar(kind: Any) -> bool:
    import pyarrow as pa

    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_float32(kind)
        or pa.types.is_float64(kind)
        or pa.types.is_boolean(kind)
    )
