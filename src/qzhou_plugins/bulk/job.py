"""One bulk job, whichever engine runs it: check everything, skip what is stored, embed the rest.

The order is what makes a GPU-hour job safe to start and to restart:

1. the arguments and the whole corpus are checked (no model is loaded: a bad line fails in
   seconds, not after an hour);
2. the output folder is locked and read: the fingerprint of its shards must match this run (the
   model name is compared before loading anything, the exact prefixes once the model is known),
   and its ids must all be corpus ids;
3. only the rows not yet stored are embedded, in this process or on Ray, and written as shards;
4. the shards are checked to hold every corpus id exactly once, and the manifest is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import EncoderConfig
from ..encoder import Encoder, wants_progress
from ..instructions import TaskLike, resolve_task
from ..ray_cluster import ray_cluster
from ..validation import check_count
from .choices import DEFAULT_SHARD_ROWS, SIDES, STORAGE_DTYPES
from .corpus import Corpus, open_source, scan_corpus
from .local import embed_in_process
from .output import (
    COMPARED_KEYS,
    EARLY_KEYS,
    FORMAT,
    Output,
    OutputState,
    ShardWriter,
    differences,
    make_fingerprint,
    refuse_mismatch,
)
from .progress import Progress, first_warnings_only
from .sources import Source


@dataclass(frozen=True)
class RayPool:
    """Where and how wide a Ray job runs: an address (None: a local cluster) and its actor pool."""

    address: str | None
    actors: int
    gpus_per_actor: float | None
    shard_rows: int


@dataclass(frozen=True)
class BulkResult:
    """What a run did: the corpus's rows, how many this run embedded, how fast, and the manifest."""

    out: Path
    rows: int
    added: int
    already_stored: int
    tokens: int
    seconds: float
    startup_seconds: float
    """Until the first rows were embedded: model loading, and on Ray the actors' start."""
    steady_tokens_per_second: float
    """The pace after the first rows, start-up left out (0 when too few rows to tell)."""
    fingerprint: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def rows_per_second(self) -> float:
        return self.added / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def embed_corpus(
    source: str | Path,
    out: str | Path,
    *,
    model: str | Path,
    side: str = "document",
    task: TaskLike = None,
    id_field: str = "_id",
    text_fields: Sequence[str] = ("title", "text"),
    metadata_fields: Sequence[str] | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    ray: bool | str | None = None,
    actors: int = 1,
    gpus_per_actor: float | None = None,
    dtype: str = "float32",
    text_column: bool = False,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    show_progress: bool | None = None,
    **encoder_options: Any,
) -> BulkResult:
    """Embed every row of ``source`` into parquet shards under ``out``; rerun to resume.

    ``source`` is a JSON-lines corpus, a parquet file or folder (rows named by ``id_field``, text
    from ``text_fields``, metadata from ``metadata_fields``: by default every other field, and the
    title; ``[]`` for none), or documents (a ``.txt``/``.md`` file or a folder of documents) cut into
    chunks of ``chunk_size`` characters (default: as ``index`` cuts them), each chunk under the id
    ``index`` stores it with and with the metadata it records. The metadata is stored beside each
    vector, for ``load`` to put into Chroma.

    ``side`` and ``task`` choose the prefix, as :meth:`Encoder.prefixes` decides it (retrieval
    documents get none; queries get the task's instruction). ``ray``: None or False runs in this
    process; True (or ``"local"``) starts a Ray cluster on this machine, or uses the session already
    running; an address (``"auto"``, ``"ray://head:10001"``) connects to a cluster. ``actors`` and
    ``gpus_per_actor`` size the Ray actor pool. ``dtype`` is the storage dtype (float32 or
    float16); ``text_column`` also stores each row's text. ``encoder_options`` are the fields of
    :class:`~qzhou_plugins.EncoderConfig` (``max_length``, ``device``, ``base_url``, ...).
    """
    config = _checked_config(
        model, side, task, ray, actors, gpus_per_actor, dtype, shard_rows, encoder_options
    )
    corpus_source = open_source(
        source,
        id_field=id_field,
        text_fields=text_fields,
        metadata_fields=metadata_fields,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
    )
    corpus = scan_corpus(corpus_source)
    settings = {"side": side, "task": task, "dtype": dtype, "text_column": text_column}
    pool = None
    if ray is not None and ray is not False:
        pool = RayPool(None if ray is True else str(ray), actors, gpus_per_actor, shard_rows)
    with Output(out) as output:
        return _run(output, corpus_source, corpus, config, settings, pool, shard_rows, show_progress)


def _run(
    output: Output,
    source: Source,
    corpus: Corpus,
    config: EncoderConfig,
    settings: dict[str, Any],
    pool: RayPool | None,
    shard_rows: int,
    show_progress: bool | None,
) -> BulkResult:
    """Steps 2 to 4 of the module docstring, on a locked output folder."""
    started = time.perf_counter()
    requested = {"format": FORMAT, "model": config.model, **settings}
    state = output.read_state()
    if state.fingerprint is not None:
        refuse_mismatch(output.path, differences(state.fingerprint, requested, EARLY_KEYS))
    output.check_corpus(state, corpus.ids, str(source.path))
    pending = corpus.rows - len(state.done)
    accept = _acceptor(output, state, requested, shard_rows, pending)
    progress = Progress(pending, show=wants_progress(show_progress, pending))
    work = _Work(source, config, settings, state, accept, progress)
    try:
        with first_warnings_only():
            if pool is None:
                _run_in_process(work)
            else:
                _run_on_ray(work, pool)
    finally:
        progress.close()
    manifest = output.finish(corpus_ids=corpus.ids, source=source.describe())
    return BulkResult(
        out=output.path,
        rows=corpus.rows,
        added=progress.rows,
        already_stored=len(state.done),
        tokens=progress.tokens,
        seconds=time.perf_counter() - started,
        startup_seconds=progress.startup_seconds,
        steady_tokens_per_second=progress.steady_tokens_per_second,
        fingerprint=manifest["fingerprint"],
        manifest=manifest,
    )


def _checked_config(
    model: str | Path,
    side: str,
    task: TaskLike,
    ray: bool | str | None,
    actors: int,
    gpus_per_actor: float | None,
    dtype: str,
    shard_rows: int,
    encoder_options: dict[str, Any],
) -> EncoderConfig:
    """Every argument checked before the corpus is read; the encoder's configuration."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {', '.join(SIDES)}, not {side!r}")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(STORAGE_DTYPES)}, not {dtype!r}")
    resolve_task(task)  # a misspelt task name fails now, not after the scan
    check_count(actors, what="actors", allow_none=False, minimum=1)
    check_count(shard_rows, what="shard_rows", allow_none=False, minimum=1)
    if gpus_per_actor is not None and (
        isinstance(gpus_per_actor, bool)
        or not isinstance(gpus_per_actor, (int, float))
        or gpus_per_actor <= 0
    ):
        raise ValueError(f"gpus_per_actor must be a positive number, not {gpus_per_actor!r}")
    if (ray is None or ray is False) and (actors != 1 or gpus_per_actor is not None):
        raise ValueError("actors and gpus_per_actor size a Ray actor pool: they need ray (--ray)")
    return EncoderConfig(model=model, **encoder_options)


def _acceptor(
    output: Output, state: OutputState, requested: dict[str, Any], shard_rows: int, pending: int
) -> Callable[[dict[str, Any]], ShardWriter]:
    """The check of a model's full fingerprint against the output, returning the one shard writer.

    The first fingerprint accepted becomes the reference for the rest (Ray actors on several nodes
    must all agree). The manifest is removed only once a run with new rows is known to be accepted,
    so that a refused run leaves the output exactly as it was.
    """
    writer: ShardWriter | None = None

    def accept(fingerprint: dict[str, Any]) -> ShardWriter:
        nonlocal writer
        reference = state.fingerprint or requested
        refuse_mismatch(output.path, differences(reference, fingerprint, COMPARED_KEYS))
        if writer is None:
            state.fingerprint = fingerprint
            if pending:
                output.forget_manifest()
            writer = ShardWriter(output, fingerprint, shard_rows)
        return writer

    return accept


@dataclass(frozen=True)
class _Work:
    """What either engine needs: the rows, the encoder settings, what is stored, where rows go."""

    source: Source
    config: EncoderConfig
    settings: dict[str, Any]
    state: OutputState
    accept: Callable[[dict[str, Any]], ShardWriter]
    progress: Progress


def _run_in_process(work: _Work) -> None:
    encoder = Encoder.shared(work.config)
    fingerprint = make_fingerprint(encoder, **work.settings)
    embed_in_process(
        work.source,
        encoder,
        prefix=fingerprint["prefix"],
        what=f"{work.settings['side']} texts",
        done=work.state.done,
        writer=work.accept(fingerprint),
        progress=work.progress,
    )


def _run_on_ray(work: _Work, pool: RayPool) -> None:
    from . import ray_job

    ray_module = ray_job.import_ray()
    options = work.config.given_options()
    with ray_cluster(ray_module, pool.address):
        ray_job.embed_on_ray(
            work.source,
            options=options,
            settings=work.settings,
            actors=pool.actors,
            gpus_per_actor=pool.gpus_per_actor,
            done=work.state.done,
            pending=work.progress.total,
            accept=work.accept,
            progress=work.progress,
            batch_rows=min(ray_job.BATCH_ROWS, pool.shard_rows),
        )
