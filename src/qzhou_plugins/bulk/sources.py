"""Where a bulk job's rows come from: a BEIR-style JSON-lines corpus or a parquet file or folder.

Every source yields rows of (id, text) in batches, read as it goes (a corpus never has to fit in
memory), and can describe itself as a Ray Data dataset of the same rows. The text of a row is its
text fields joined with a space and stripped: with the default fields (``title``, ``text``) that is
how BEIR and MTEB embed a corpus, and how ``qzhou-plugins eval retrieval`` reads one, so vectors
made here are the ones an evaluation would make.

:func:`scan_corpus` reads the whole source once before any model is loaded: a line that is not
JSON, a missing or duplicated id, a missing text field or a text with nothing to embed is an error
naming its file and line (or row) and its id, rather than a failure an hour into a GPU job.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..jsonlines import JSONLinesError, read_json_objects
from ..validation import validate_texts
from .ids import IdHashes, hash_ids, is_in

SCAN_ROWS = 4096
"""Rows read and checked at a time."""


class CorpusError(ValueError):
    """The corpus cannot be embedded as it is; the message names the file, the line or row, and the id."""


@dataclass
class Rows:
    """A batch of rows: ids, the texts to embed, and where each row is (for error messages)."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def row_id(value: Any, place: str, id_field: str) -> str:
    """A row's id as text: a non-blank string, or an integer (BEIR ids are sometimes numbers)."""
    if value is None:
        raise CorpusError(f"{place}: the id field {id_field!r} is missing")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CorpusError(f"{place}: the id {id_field!r} must be a string or an integer, not {value!r}")
    text = str(value)
    if not text.strip():
        raise CorpusError(f"{place}: the id field {id_field!r} is blank")
    return text


def join_text_fields(values: Sequence[Any], fields: Sequence[str], place: str, row: str) -> str:
    """The text of a row: its text fields joined with a space, stripped (title, a space, text).

    A field that is absent or null is an error rather than an empty string: a corpus whose ``text``
    field is misnamed would otherwise be embedded as titles alone, silently.
    """
    parts: list[str] = []
    for name, value in zip(fields, values, strict=True):
        if value is None:
            raise CorpusError(f"{place}: the text field {name!r} of id {row!r} is missing")
        if not isinstance(value, str):
            raise CorpusError(
                f"{place}: the text field {name!r} of id {row!r} must be a string, not {type(value).__name__}"
            )
        parts.append(value)
    return " ".join(parts).strip()


class Source:
    """A corpus to embed; subclasses read one kind of file."""

    kind = ""

    def __init__(self, path: Path, id_field: str, text_fields: Sequence[str]) -> None:
        if not text_fields or any(not name for name in text_fields):
            raise ValueError(f"text fields must be one or more field names, not {list(text_fields)!r}")
        if not id_field:
            raise ValueError("the id field must be a field name")
        self.path = path
        self.id_field = id_field
        self.text_fields = tuple(text_fields)

    def batches(self, size: int = SCAN_ROWS) -> Iterator[Rows]:
        """The rows in batches of up to ``size``, in file order."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the source."""
        return {
            "kind": self.kind,
            "path": str(self.path.resolve()),
            "id_field": self.id_field,
            "text_fields": list(self.text_fields),
        }

    def ray_dataset(self, ray_data: Any, done: np.ndarray) -> Any:
        """A Ray Data dataset of the rows (columns ``id``, ``text``) whose id hash is not in ``done``."""
        raise NotImplementedError


class JsonLinesSource(Source):
    """A BEIR-style ``corpus.jsonl``: one JSON object per line with an id and text fields."""

    kind = "jsonl"

    def batches(self, size: int = SCAN_ROWS) -> Iterator[Rows]:
        rows = Rows()
        try:
            for line, record in read_json_objects(self.path, expected="a JSON object (one row)"):
                place = f"{self.path}:{line}"
                ident = row_id(record.get(self.id_field), place, self.id_field)
                values = [record.get(name) for name in self.text_fields]
                rows.ids.append(ident)
                rows.texts.append(join_text_fields(values, self.text_fields, place, ident))
                rows.places.append(place)
                if len(rows) >= size:
                    yield rows
                    rows = Rows()
        except JSONLinesError as error:
            raise CorpusError(str(error)) from None
        if len(rows):
            yield rows

    def ray_dataset(self, ray_data: Any, done: np.ndarray) -> Any:
        lines = ray_data.read_text(str(self.path), encoding="utf-8-sig")
        return lines.map_batches(
            parse_json_lines,
            batch_format="numpy",
            fn_kwargs={"id_field": self.id_field, "text_fields": self.text_fields, "done": done},
        )


class ParquetSource(Source):
    """A parquet file, or a folder of them, with an id column and text columns."""

    kind = "parquet"

    def __init__(self, path: Path, id_field: str, text_fields: Sequence[str]) -> None:
        super().__init__(path, id_field, text_fields)
        import pyarrow.parquet as pq

        self.files = (
            [path]
            if path.is_file()
            else sorted(
                file
                for file in path.rglob("*.parquet")
                if not any(part.startswith((".", "_")) for part in file.relative_to(path).parts)
            )
        )
        if not self.files:
            raise CorpusError(f"{path}: no .parquet files in this folder")
        for file in self.files:
            try:
                names = set(pq.read_schema(file).names)
            except Exception as error:  # pyarrow raises several kinds for a file that is not parquet
                raise CorpusError(f"{file}: not a readable parquet file ({error})") from None
            missing = [name for name in (id_field, *self.text_fields) if name not in names]
            if missing:
                raise CorpusError(
                    f"{file}: no column(s) {', '.join(map(repr, missing))} (has: {', '.join(sorted(names))})"
                )

    def batches(self, size: int = SCAN_ROWS) -> Iterator[Rows]:
        import pyarrow.parquet as pq

        columns = [self.id_field, *self.text_fields]
        for file in self.files:
            number = 0
            for batch in pq.ParquetFile(file).iter_batches(batch_size=size, columns=columns):
                data = [batch.column(name).to_pylist() for name in columns]
                rows = Rows()
                for values in zip(*data, strict=True):
                    number += 1
                    place = f"{file} row {number}"
                    ident = row_id(values[0], place, self.id_field)
                    rows.ids.append(ident)
                    rows.texts.append(join_text_fields(values[1:], self.text_fields, place, ident))
                    rows.places.append(place)
                yield rows

    def ray_dataset(self, ray_data: Any, done: np.ndarray) -> Any:
        table = ray_data.read_parquet(
            [str(file) for file in self.files], columns=[self.id_field, *self.text_fields]
        )
        return table.map_batches(
            join_columns,
            batch_format="numpy",
            fn_kwargs={"id_field": self.id_field, "text_fields": self.text_fields, "done": done},
        )


def open_source(
    path: str | Path, *, id_field: str = "_id", text_fields: Sequence[str] = ("title", "text")
) -> Source:
    """The source for ``path``: a ``.jsonl`` file, or a parquet file or folder of parquet files."""
    source = Path(path)
    if isinstance(text_fields, str):
        raise TypeError("text_fields must be a list of field names, not a single string")
    if source.is_file() and source.suffix.lower() in (".jsonl", ".json"):
        return JsonLinesSource(source, id_field, text_fields)
    if (source.is_file() and source.suffix.lower() == ".parquet") or source.is_dir():
        return ParquetSource(source, id_field, text_fields)
    if not source.exists():
        raise CorpusError(f"{source}: no such file or folder")
    raise CorpusError(f"{source}: expected a .jsonl corpus, a .parquet file or a folder of parquet files")


# -- the check before any model work ------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """What the scan learned: how many rows, and the sorted hashes of their ids."""

    rows: int
    ids: np.ndarray


def scan_corpus(source: Source) -> Corpus:
    """Read the whole source once and refuse it, naming the row, if any row cannot be embedded."""
    hashes = IdHashes()
    rows = 0
    for batch in source.batches():
        _check_texts(batch)
        hashes.add(hash_ids(batch.ids))
        rows += len(batch)
    if rows == 0:
        raise CorpusError(f"{source.path}: the corpus is empty (no rows to embed)")
    repeated = hashes.repeated()
    if len(repeated):
        _name_duplicate(source, repeated)
    return Corpus(rows=rows, ids=hashes.sorted)


def _check_texts(batch: Rows) -> None:
    """The core's text validation, its error turned into one naming the row and its id."""
    try:
        validate_texts(batch.texts, what="texts")
    except (TypeError, ValueError):
        for ident, text, place in zip(batch.ids, batch.texts, batch.places, strict=True):
            try:
                validate_texts([text], what="text")
            except (TypeError, ValueError) as error:
                raise CorpusError(f"{place}: id {ident!r} has nothing to embed ({error})") from None
        raise


def _name_duplicate(source: Source, repeated: np.ndarray) -> None:
    """A second pass to name the first repeated id and both of its places (errors only)."""
    first_place: dict[str, str] = {}
    for batch in source.batches():
        suspects = is_in(hash_ids(batch.ids), repeated)
        for ident, place, suspect in zip(batch.ids, batch.places, suspects, strict=True):
            if not suspect:
                continue
            if ident in first_place:
                raise CorpusError(f"{place}: duplicate id {ident!r} (first at {first_place[ident]})")
            first_place[ident] = place
    raise RuntimeError(  # distinct ids with one 64-bit hash: vanishingly rare, never silently mixed
        f"two different ids of {source.path} share a 64-bit hash ({sorted(first_place)[:4]}); "
        "rename one of them"
    )


# -- Ray Data's side: the same rows, parsed in read tasks ---------------------------------------------


def parse_json_lines(
    batch: dict[str, np.ndarray], *, id_field: str, text_fields: Sequence[str], done: np.ndarray
) -> dict[str, np.ndarray]:
    """Rows of JSON lines read by Ray Data (already checked by :func:`scan_corpus`), minus ``done``."""
    import json

    ids: list[str] = []
    texts: list[str] = []
    for line in batch["text"]:
        if not line.strip():
            continue
        record = json.loads(line)
        ident = row_id(record.get(id_field), "row", id_field)
        ids.append(ident)
        texts.append(join_text_fields([record.get(name) for name in text_fields], text_fields, "row", ident))
    return _not_done(ids, texts, done)


def join_columns(
    batch: dict[str, np.ndarray], *, id_field: str, text_fields: Sequence[str], done: np.ndarray
) -> dict[str, np.ndarray]:
    """Rows of parquet columns read by Ray Data, minus ``done``."""
    ids = [row_id(_plain(value), "row", id_field) for value in batch[id_field]]
    texts = [
        join_text_fields([_plain(batch[name][i]) for name in text_fields], text_fields, "row", ident)
        for i, ident in enumerate(ids)
    ]
    return _not_done(ids, texts, done)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (numpy ints are not ``int``)."""
    return value.item() if isinstance(value, np.generic) else value


def _not_done(ids: list[str], texts: list[str], done: np.ndarray) -> dict[str, np.ndarray]:
    keep = ~is_in(hash_ids(ids), done)
    return {
        "id": np.asarray(ids, dtype=object)[keep],
        "text": np.asarray(texts, dtype=object)[keep],
    }
