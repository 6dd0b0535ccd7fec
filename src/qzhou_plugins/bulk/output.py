"""The output of a bulk job: parquet shards written whole or not at all, and a derived manifest.

Exactly-once comes from three rules rather than from a job log that could disagree with the data:

- a shard is written to a hidden temporary file and renamed into place (``os.replace`` is atomic),
  so a shard either exists complete or not at all, whatever kills the writer and when;
- on start, the ids of the complete shards are read (the ``id`` column only) and skipped, so a
  rerun embeds exactly what is missing;
- one writer at a time holds a lock on the folder (released by the OS when its process dies), so
  two runs cannot both write the same missing ids.

The manifest (``_manifest.json``; the leading underscore keeps ``pyarrow`` from reading it as data) is
derived from the shards at the end of a run, never trusted over them. Every shard carries the
fingerprint of the vectors (model, dimension, side, the exact prefix, normalisation, pooling,
``max_length``, storage dtype, the runtime's vector family, the model family, the Matryoshka size) in
its parquet schema metadata, so that vectors of another model or instruction are never mixed into an
output, and a reader needs nothing but ``pyarrow``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..encoder import Encoder
from ..instructions import Task, TaskLike
from .ids import IdHashes, hash_ids, is_in

FORMAT = "qzhou-bulk/1"
FINGERPRINT_KEY = b"qzhou:fingerprint"
MANIFEST_NAME = "_manifest.json"
SHARD_PREFIX = "part-"
METADATA_COLUMN = "metadata"
COMPARED_KEYS = (
    "format", "model", "dimension", "side", "prefix", "query_prefix", "document_prefix",
    "normalize", "pooling", "max_length", "dtype", "text_column", "vector_family", "family", "dimensions",
)  # fmt: skip
"""What must be equal for two runs to write into one output (what decides the stored vectors). Outputs
written before ``vector_family``, ``family`` and ``dimensions`` were recorded lack them: a key that
one side lacks is not compared (:func:`differences`)."""
EARLY_KEYS = ("format", "model", "side", "dtype", "text_column")
"""The part of :data:`COMPARED_KEYS` known before a model is loaded: checked first, for free."""


class OutputMismatchError(ValueError):
    """The output folder holds vectors made another way; nothing was written."""


class OutputError(RuntimeError):
    """The output folder cannot be used as it is (busy, damaged, or from another corpus)."""


def task_record(task: TaskLike) -> Any:
    """``task`` as JSON (a name, an instruction sentence, or a Task's fields), for the record."""
    if isinstance(task, Task):
        return task.model_dump()
    return None if task is None else str(getattr(task, "value", task))


def make_fingerprint(
    encoder: Encoder, *, side: str, task: TaskLike, dtype: str, text_column: bool
) -> dict[str, Any]:
    """Everything that decides the stored vectors, plus what a loader needs to query them alike."""
    query_prefix, document_prefix = encoder.prefixes(task)
    facts = encoder.facts
    return {
        "format": FORMAT,
        "model": encoder.model_name,
        "dimension": facts.dimension,
        "side": side,
        "prefix": query_prefix if side == "query" else document_prefix,
        "query_prefix": query_prefix,
        "document_prefix": document_prefix,
        "task": task_record(task),
        "normalize": facts.normalized,
        "pooling": facts.pooling,
        "max_length": facts.max_length,
        "dtype": dtype,
        "text_column": text_column,
        "model_dtype": facts.fingerprint.get("dtype"),
        "backend": facts.fingerprint.get("backend"),
        # Which runtime's vectors (a quantised GGUF file's are not the torch encoder's), the model
        # family whose rules made them, and the Matryoshka size (None: the full vector).
        "vector_family": facts.vector_family,
        "source_model": facts.source_model,
        "family": facts.family,
        "dimensions": int(facts.fingerprint["dimensions"]) if "dimensions" in facts.fingerprint else None,
    }


def differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    """One line per key whose value differs between the output and this run."""
    return [
        f"{key.replace('_', ' ')}: the output has {recorded.get(key)!r}, this run has {wanted.get(key)!r}"
        for key in keys
        if key in recorded and key in wanted and recorded[key] != wanted[key]
    ]


def refuse_mismatch(folder: Path, found: list[str]) -> None:
    if found:
        raise OutputMismatchError(
            f"{folder} holds vectors made another way, so nothing was written: {'; '.join(found)}. "
            "Use another --out for these settings, or delete the folder to start again."
        )


def shard_schema(fingerprint: Mapping[str, Any]) -> Any:
    """The Arrow schema of a shard: ``id``, ``embedding`` (fixed-size list), optional ``text``, and
    ``metadata`` (each row's as JSON text, null for none; not in the fingerprint, since it does not
    change the vectors, and absent from the shards of older outputs)."""
    import pyarrow as pa

    value = pa.float16() if fingerprint["dtype"] == "float16" else pa.float32()
    fields = [pa.field("id", pa.string(), nullable=False)]
    fields.append(pa.field("embedding", pa.list_(value, int(fingerprint["dimension"])), nullable=False))
    if fingerprint.get("text_column"):
        fields.append(pa.field("text", pa.string(), nullable=False))
    fields.append(pa.field(METADATA_COLUMN, pa.string(), nullable=True))
    return pa.schema(fields, metadata={FINGERPRINT_KEY: json.dumps(fingerprint, sort_keys=True).encode()})


def shard_fingerprint(path: Path) -> dict[str, Any]:
    """The fingerprint recorded in a shard's schema metadata."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception as error:  # pyarrow raises several kinds for a damaged file
        raise OutputError(f"{path} is not a readable parquet file ({error}); delete it and rerun") from None
    if FINGERPRINT_KEY not in metadata:
        raise OutputError(
            f"{path} has no {FINGERPRINT_KEY.decode()} metadata: it was not written by this job"
        )
    return dict(json.loads(metadata[FINGERPRINT_KEY]))


def list_shards(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{SHARD_PREFIX}*.parquet"))


def write_atomically(path: Path, write: Any) -> None:
    """Call ``write(temporary_path)``, then rename the file into ``path``: whole or absent, never half."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@dataclass
class OutputState:
    """What the complete shards already hold."""

    fingerprint: dict[str, Any] | None = None
    done: IdHashes = field(default_factory=IdHashes)
    shards: list[Path] = field(default_factory=list)


class Output:
    """An output folder, locked for the life of the ``with`` block."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock: IO[str] | None = None

    def __enter__(self) -> Output:
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path} is a file; --out must be a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = (self.path / ".lock").open("a")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise OutputError(f"another run is writing into {self.path}; wait for it to finish") from None
        for stale in self.path.glob(".*.tmp-*"):
            stale.unlink()  # a file whose writer was killed before the rename: never part of the output
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock

    def read_state(self) -> OutputState:
        """The fingerprint and ids of the complete shards (all shards must agree)."""
        import pyarrow.parquet as pq

        state = OutputState(shards=list_shards(self.path))
        for shard in state.shards:
            recorded = shard_fingerprint(shard)
            if state.fingerprint is None:
                state.fingerprint = recorded
            elif found := differences(state.fingerprint, recorded, COMPARED_KEYS):
                raise OutputError(f"{shard} differs from {state.shards[0].name}: {'; '.join(found)}")
            ids = pq.read_table(shard, columns=["id"]).column("id").to_pylist()
            state.done.add(hash_ids(ids))
        if len(state.done.repeated()):
            raise OutputError(
                f"{self.path}: {self._first_repeat(state)} is stored twice; the output was altered"
            )
        return state

    def find_ids(self, hashes: np.ndarray) -> Iterator[tuple[str, str]]:
        """(id, shard name) of each stored row whose id hash is in the sorted ``hashes`` (error paths)."""
        import pyarrow.parquet as pq

        for shard in list_shards(self.path):
            ids = pq.read_table(shard, columns=["id"]).column("id").to_pylist()
            for ident, found in zip(ids, is_in(hash_ids(ids), hashes), strict=True):
                if found:
                    yield ident, shard.name

    def _first_repeat(self, state: OutputState) -> str:
        seen: dict[str, str] = {}
        for ident, shard in self.find_ids(state.done.repeated()):
            if ident in seen:
                return f"id {ident!r} ({seen[ident]} and {shard})"
            seen[ident] = shard
        return "an id hash"  # pragma: no cover - two ids with one 64-bit hash

    def check_corpus(self, state: OutputState, corpus_ids: np.ndarray, source: str) -> None:
        """Refuse an output holding ids that the corpus does not: it was made from another corpus."""
        done = state.done.sorted
        extra = done[~is_in(done, corpus_ids)]
        if len(extra):
            ident, shard = next(self.find_ids(extra))
            raise OutputError(
                f"{self.path} holds {len(extra)} id(s) that are not in {source} (the first: {ident!r} in "
                f"{shard}): it was made from another corpus; use another --out"
            )

    def next_number(self) -> int:
        numbers = [int(p.stem.removeprefix(SHARD_PREFIX)) for p in list_shards(self.path)]
        return max(numbers, default=0) + 1

    def forget_manifest(self) -> None:
        """Remove the manifest before adding rows: until the run ends it would describe less than is there."""
        (self.path / MANIFEST_NAME).unlink(missing_ok=True)

    def finish(self, *, corpus_ids: np.ndarray, source: Mapping[str, Any]) -> dict[str, Any]:
        """Check that the shards hold every corpus id exactly once and write the manifest."""
        state = self.read_state()
        done = state.done.sorted
        if len(done) != len(corpus_ids) or not is_in(corpus_ids, done).all():
            raise OutputError(
                f"{self.path} holds {len(done)} rows for a corpus of {len(corpus_ids)}: the run is unfinished"
            )
        manifest = {
            "format": FORMAT,
            "complete": True,
            "rows": len(done),
            "fingerprint": state.fingerprint,
            "source": dict(source),
            "shards": [_shard_entry(shard) for shard in state.shards],
        }
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        write_atomically(self.path / MANIFEST_NAME, lambda path: path.write_text(text, "utf-8"))
        return manifest


def _shard_entry(shard: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    return {
        "file": shard.name,
        "rows": pq.ParquetFile(shard).metadata.num_rows,
        "bytes": shard.stat().st_size,
    }


class ShardWriter:
    """Buffers rows and writes them as shards of about ``shard_rows`` rows, each atomically.

    At most one shard's vectors are held in memory, whatever the size of the corpus.
    """

    def __init__(self, output: Output, fingerprint: Mapping[str, Any], shard_rows: int) -> None:
        self.output = output
        self.schema = shard_schema(fingerprint)
        self.storage_dtype: str = fingerprint["dtype"]
        self.dtype = np.float16 if self.storage_dtype == "float16" else np.float32
        self.with_text = bool(fingerprint.get("text_column"))
        self.shard_rows = shard_rows
        self.number = output.next_number()
        self._ids: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._texts: list[str] = []
        self._metadata: list[str | None] = []
        self.written = 0

    def add(
        self,
        ids: list[str],
        vectors: np.ndarray,
        texts: list[str] | None = None,
        metadata: list[str | None] | None = None,
    ) -> None:
        """Buffer rows (``metadata``: each row's as JSON text); write a shard each ``shard_rows`` rows."""
        if len(ids) != len(vectors) or (metadata is not None and len(metadata) != len(ids)):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors and {len(metadata or ())} metadata")
        self._ids += ids
        self._vectors.append(np.asarray(vectors, dtype=self.dtype))
        self._metadata += [None] * len(ids) if metadata is None else list(metadata)
        if self.with_text:
            self._texts += list(texts or [])
        while len(self._ids) >= self.shard_rows:
            self._write(self.shard_rows)

    def flush(self) -> None:
        """Write what is buffered as one shard (nothing if the buffer is empty)."""
        if self._ids:
            self._write(len(self._ids))

    def _write(self, rows: int) -> None:
        """Write the first ``rows`` buffered rows as the next shard, atomically; keep the rest."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        vectors = np.concatenate(self._vectors)
        columns = [
            pa.array(self._ids[:rows], pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors[:rows].reshape(-1)), vectors.shape[1]),
        ]
        if self.with_text:
            columns.append(pa.array(self._texts[:rows], pa.string()))
        columns.append(pa.array(self._metadata[:rows], pa.string()))
        table = pa.Table.from_arrays(columns, schema=self.schema)
        path = self.output.path / f"{SHARD_PREFIX}{self.number:06d}.parquet"
        write_atomically(path, lambda temporary: pq.write_table(table, temporary))
        self.number += 1
        self.written += rows
        self._ids, self._vectors, self._texts = self._ids[rows:], [vectors[rows:]], self._texts[rows:]
        self._metadata = self._metadata[rows:]
