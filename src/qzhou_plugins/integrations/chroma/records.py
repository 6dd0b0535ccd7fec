"""Texts, metadatas and ids turned into validated records, each built once, in batches.

Every check happens before a record's id is hashed and before anything is written: the texts by
:func:`qzhou_plugins.validation.validate_texts` (the rules every edge shares), the metadata by
:mod:`.metadata`, the ids here. A list (any ``Sequence``) is checked whole, so that nothing of it
is written unless all of it is valid; a stream is checked batch by batch as it is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from itertools import islice, zip_longest
from typing import Any

import numpy as np

from ...documents import content_id
from ...validation import validate_text, validate_texts
from .metadata import check_unicode, checked_metadata

_MISSING = object()


@dataclass(frozen=True)
class Record:
    """One record to store: its id, its text, its metadata as Chroma will hold it, and its vector.

    ``vector`` is None for a text to embed when it is written; a vector made elsewhere (a bulk
    output) is stored as it is, and its ``text`` may then be None (the output kept no texts: the
    record is stored without a document).
    """

    id: str
    text: str | None
    metadata: dict[str, Any] | None
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


def record_batches(
    texts: Iterable[str],
    metadatas: Iterable[Mapping[str, Any] | None] | None,
    ids: Iterable[str] | None,
    batch_size: int,
) -> Iterator[list[Record]]:
    """Validated records, ``batch_size`` at a time; a problem raises, naming its position.

    Lists are validated whole before the first batch is yielded; streams batch by batch.
    """
    _check_inputs(texts, metadatas, ids)
    if all(part is None or isinstance(part, Sequence) for part in (texts, metadatas, ids)):
        records = _whole(texts, metadatas, ids)  # type: ignore[arg-type]
        for start in range(0, len(records), batch_size):
            yield records[start : start + batch_size]
        return
    builder = _RecordBuilder(with_ids=ids is not None)
    rows = zip_longest(
        texts, metadatas if metadatas is not None else (), ids if ids is not None else (), fillvalue=_MISSING
    )
    start = 0
    while chunk := list(islice(rows, batch_size)):
        _check_lengths_of(chunk, start, metadatas is not None, ids is not None)
        yield [
            builder.record(
                _streamed_text(text, start + offset),
                None if metadata is _MISSING else metadata,  # no metadatas given
                id_,
                start + offset,
            )
            for offset, (text, metadata, id_) in enumerate(chunk)
        ]
        start += len(chunk)


def _check_inputs(texts: Any, metadatas: Any, ids: Any) -> None:
    """Each input an iterable of its kind (not a single one), and as many of each when that is known."""
    parts = (("texts", texts, "strings"), ("metadatas", metadatas, "mappings"), ("ids", ids, "strings"))
    for label, value, kind in parts:
        if isinstance(value, (str, bytes, Mapping)):
            raise TypeError(
                f"{label} must be an iterable of {kind}, one per text, not a single {type(value).__name__}"
            )
        if value is not None and not isinstance(value, Iterable):
            raise TypeError(f"{label} must be an iterable of {kind}, not {type(value).__name__}")
    if all(isinstance(value, Sized) for _, value, _ in parts if value is not None):
        lengths = {label: len(value) for label, value, _ in parts if value is not None}
        if len(set(lengths.values())) > 1:
            raise ValueError("lengths differ: " + ", ".join(f"{n} {label}" for label, n in lengths.items()))


def _whole(texts: Sequence[str], metadatas: Sequence[Any] | None, ids: Sequence[Any] | None) -> list[Record]:
    """Every record of lists, each text validated once (all bad positions named at once)."""
    checked = validate_texts(texts)
    builder = _RecordBuilder(with_ids=ids is not None)
    return [
        builder.record(
            text,
            metadatas[position] if metadatas is not None else None,
            ids[position] if ids is not None else _MISSING,
            position,
        )
        for position, text in enumerate(checked)
    ]


def _streamed_text(text: Any, position: int) -> str:
    """One streamed text, checked by the shared rules and named by its position in the whole stream."""
    if not isinstance(text, str):
        kind = "None" if text is None else f"a {type(text).__name__}"
        raise TypeError(f"texts must be strings: texts[{position}] is {kind}")
    return validate_text(text, what=f"texts[{position}]")


def _check_lengths_of(
    rows: list[tuple[Any, Any, Any]], start: int, with_metadatas: bool, with_ids: bool
) -> None:
    """Streams of differing lengths are found out where the shorter one ends."""
    for column, label, given in ((0, "texts", True), (1, "metadatas", with_metadatas), (2, "ids", with_ids)):
        ended = [start + i for i, row in enumerate(rows) if (row[column] is _MISSING) == given]
        if ended:
            raise ValueError(f"{label} ended after {ended[0]} items while the other inputs went on")


class _RecordBuilder:
    """Builds the records of one call, remembering the ids given so far (they must be unique)."""

    def __init__(self, *, with_ids: bool) -> None:
        self.with_ids = with_ids
        self.seen: dict[str, int] = {}

    def record(self, text: str, metadata: Any, id_: Any, position: int) -> Record:
        checked = checked_metadata(metadata, f"metadatas[{position}]")
        if not self.with_ids:
            return Record(id=content_id(text, checked), text=text, metadata=checked)
        if not isinstance(id_, str) or not id_.strip():
            raise TypeError(f"ids must be non-empty strings: ids[{position}] is {id_!r}")
        check_unicode(id_, f"ids[{position}]")
        if id_ in self.seen:
            raise ValueError(f"ids must be unique: {id_!r} is at positions {self.seen[id_]} and {position}")
        self.seen[id_] = position
        return Record(id=id_, text=text, metadata=checked)
