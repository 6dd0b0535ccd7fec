"""Where a bulk job's rows come from: the source protocol, and the record sources (JSON lines, parquet).

Every source yields rows of (id, text, metadata) in batches, read as it goes (a corpus never has to fit in
memory), and can describe itself as a Ray Data dataset of the same rows. In a record source (a
BEIR-style ``corpus.jsonl``, a parquet file or folder) the text of a row is its text fields joined
by :func:`qzhou_plugins.documents.join_text_fields`: with the default fields (``title``, ``text``)
that is how BEIR and MTEB embed a corpus, and how ``qzhou-plugins eval retrieval`` reads one, so
vectors made here are the ones an evaluation would make. Its other fields are its metadata
(:mod:`.row_metadata`). A folder of documents is the other kind of
source (:mod:`.documents_source`); :mod:`.corpus` tells which a path is and checks it all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..documents import join_text_fields
from ..jsonlines import JSONLinesError, read_json_objects
from .ids import hash_ids, is_in
from .row_metadata import MetadataError, default_fields, metadata_text, parquet_fields

SCAN_ROWS = 4096
"""Rows read and checked at a time."""


class CorpusError(ValueError):
    """The corpus cannot be embedded as it is; the message names the file, the line or row, and the id."""


@dataclass
class Rows:
    """A batch of rows: ids, the texts to embed, metadata, and where each row is (for error messages)."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    metadata: list[str | None] = field(default_factory=list)
    """Each row's metadata as JSON text, checked (None: the row has none)."""

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


def row_text(values: Sequence[Any], fields: Sequence[str], place: str, row: str) -> str:
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
    return join_text_fields(parts)


class Source:
    """A corpus to embed; subclasses read one kind of file."""

    kind = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    def batches(self, size: int = SCAN_ROWS) -> Iterator[Rows]:
        """The rows in batches of up to ``size``, in file order."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the source."""
        return {"kind": self.kind, "path": str(self.path.resolve())}

    def ray_dataset(self, ray_data: Any, done: np.ndarray) -> Any:
        """A Ray Data dataset of the rows (columns ``id``, ``text``, ``metadata``) whose id hash is not
        in ``done``."""
        raise NotImplementedError


class RecordSource(Source):
    """A corpus of records, each with an id field, text fields and metadata fields (JSON lines or parquet).

    ``metadata_fields`` None means the default of :mod:`.row_metadata` (the other fields, and the title).
    """

    def __init__(
        self, path: Path, id_field: str, text_fields: Sequence[str], metadata_fields: Sequence[str] | None
    ) -> None:
        if not text_fields or any(not name for name in text_fields):
            raise ValueError(f"text fields must be one or more field names, not {list(text_fields)!r}")
        if not id_field:
            raise ValueError("the id field must be a field name")
        if isinstance(metadata_fields, str) or any(not name for name in metadata_fields or ()):
            raise ValueError(f"metadata fields must be a list of field names, not {metadata_fields!r}")
        if id_field in (metadata_fields or ()):
            raise ValueError(f"the id field {id_field!r} is each row's id, not metadata")
        super().__init__(path)
        self.id_field = id_field
        self.text_fields = tuple(text_fields)
        self.metadata_fields = None if metadata_fields is None else tuple(metadata_fields)

    def describe(self) -> dict[str, Any]:
        chosen = None if self.metadata_fields is None else list(self.metadata_fields)
        return {
            **super().describe(),
            "id_field": self.id_field,
            "text_fields": list(self.text_fields),
            "metadata_fields": chosen,
        }

    def add_row(self, rows: Rows, record: Mapping[str, Any], place: str) -> None:
        """Append a record's row (id, text, metadata) to ``rows``; a problem is an error naming ``place``.

        The one reading of a record, in this process and in Ray's read tasks alike.
        """
        ident = row_id(record.get(self.id_field), place, self.id_field)
        values = [record.get(name) for name in self.text_fields]
        names = self.metadata_names(record)
        rows.ids.append(ident)
        rows.texts.append(row_text(values, self.text_fields, place, ident))
        rows.places.append(place)
        try:
            rows.metadata.append(metadata_text({name: record.get(name) for name in names}, place))
        except MetadataError as error:
            raise CorpusError(str(error)) from None

    def metadata_names(self, record: Mapping[str, Any]) -> Sequence[str]:
        """The fields of ``record`` kept as its metadata."""
        if self.metadata_fields is not None:
            return self.metadata_fields
        return default_fields(record, self.id_field, self.text_fields)


class JsonLinesSource(RecordSource):
    """A BEIR-style ``corpus.jsonl``: one JSON object per line with an id and text fields."""

    kind = "jsonl"

    def batches(self, size: int = SCAN_ROWS) -> Iterator[Rows]:
        rows = Rows()
        try:
            for line, record in read_json_objects(self.path, expected="a JSON object (one row)"):
                self.add_row(rows, record, f"{self.path}:{line}")
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
            parse_json_lines, batch_format="numpy", fn_kwargs={"source": self, "done": done}
        )


def parquet_files(folder: Path) -> list[Path]:
    """The ``.parquet`` files under ``folder``, sorted; hidden and ``_``-prefixed ones (Spark's
    ``_SUCCESS``, temporary files) left out, as Arrow's dataset reader leaves them out."""
    return sorted(
        file
        for file in folder.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in file.relative_to(folder).parts)
    )


class ParquetSource(RecordSource):
    """A parquet file, or a folder of them, with an id column, text columns and metadata columns."""

    kind = "parquet"

    def __init__(
        self,
        path: Path,
        id_field: str,
        text_fields: Sequence[str],
        metadata_fields: Sequence[str] | None,
    ) -> None:
        super().__init__(path, id_field, text_fields, metadata_fields)
        import pyarrow.parquet as pq

        self.files = [path] if path.is_file() else parquet_files(path)
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
        try:
            self.metadata_columns = parquet_fields(self.files, id_field, self.text_fields, metadata_fields)
        except MetadataError as error:
            raise CorpusError(str(error)) from None
        self.columns = list(dict.fromkeys([id_field, *self.text_fields, *self.metadata_columns]))

    def metadata_names(self, record: Mapping[str, Any]) -> Sequence[str]:
        return self.metadata_columns

    def batches(self, size: int = SCAN_ROWS) -> Iterator[Rows]:
        import pyarrow.parquet as pq

        for file in self.files:
            number = 0
            for batch in pq.ParquetFile(file).iter_batches(batch_size=size, columns=self.columns):
                yield self.table_rows(batch, f"{file} row", number)
                number += batch.num_rows

    def table_rows(self, table: Any, where: str, before: int) -> Rows:
        """The rows of an Arrow table or record batch; row ``i`` is named ``where`` and its number."""
        data = {name: table.column(name).to_pylist() for name in self.columns}
        rows = Rows()
        for i in range(table.num_rows):
            self.add_row(
                rows, {name: values[i] for name, values in data.items()}, f"{where} {before + i + 1}"
            )
        return rows

    def ray_dataset(self, ray_data: Any, done: np.ndarray) -> Any:
        table = ray_data.read_parquet([str(file) for file in self.files]).select_columns(self.columns)
        return table.map_batches(
            join_columns, batch_format="pyarrow", fn_kwargs={"source": self, "done": done}
        )


# -- Ray Data's side: the same rows, read by the same code in read tasks -------------------------------


def parse_json_lines(
    batch: dict[str, np.ndarray], *, source: JsonLinesSource, done: np.ndarray
) -> dict[str, np.ndarray]:
    """Rows of JSON lines read by Ray Data (already checked by :func:`scan_corpus`), minus ``done``."""
    import json

    rows = Rows()
    for line in batch["text"]:
        if line.strip():
            source.add_row(rows, json.loads(line), "row")
    return without_done(rows, done)


def join_columns(table: Any, *, source: ParquetSource, done: np.ndarray) -> dict[str, np.ndarray]:
    """Rows of parquet columns read by Ray Data (an Arrow table), minus ``done``."""
    return without_done(source.table_rows(table, "row", 0), done)


def without_done(rows: Rows, done: np.ndarray) -> dict[str, np.ndarray]:
    """A Ray Data batch (columns ``id``, ``text``, ``metadata``) of the rows whose id hash is not in
    ``done``."""
    keep = ~is_in(hash_ids(rows.ids), done)
    return {
        "id": np.asarray(rows.ids, dtype=object)[keep],
        "text": np.asarray(rows.texts, dtype=object)[keep],
        "metadata": np.asarray(rows.metadata, dtype=object)[keep],
    }
