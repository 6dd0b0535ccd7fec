"""The Ray Data job: the same rows, embedded by a pool of actors that each load the model once.

read (Ray Data read tasks: parse the rows, drop the ids already stored)
  -> ``map_batches(EmbedBatches, compute=ActorPoolStrategy(size=N))`` (one model per actor, one GPU
     each on a GPU cluster)
  -> the driver, which writes the rows as shards through the same atomic writer as the in-process
     job.

Ray produces vectors; it does not write the output. Ray Data retries a batch whose actor died, but
a write task that dies after its file landed and before Ray learned of it would be retried into a
second file: duplicated ids. With one writer that renames complete shards into place and refuses an
id it has already written, the output holds every id exactly once whatever is killed, the driver
included (the rerun reads the shards and embeds the rest). The driver only receives finished
vectors, a few MB/s even for a cluster of GPUs running a 7B model, and holds one shard at a time.

This is the only bulk module that imports Ray; without it, ``--ray`` says which extra to install.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..encoder import Encoder
from ..instructions import TaskLike
from ..ray_cluster import share_cpu_threads
from .formats import storage_rows
from .ids import IdHashes, hash_ids
from .output import ShardWriter, make_fingerprint
from .progress import FirstOfEachWarning, Progress, token_counts
from .sources import Source

BATCH_ROWS = 256
"""Rows per actor call (at most; fewer with smaller shards): enough for the encoder to sort and
batch by tokens, few enough to spread over the actors and to lose little when one dies."""


def import_ray() -> Any:
    """``ray`` with Ray Data, or an ImportError that names the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ImportError(
            "bulk embedding on Ray needs Ray Data: pip install 'qzhou-plugins[ray]' "
            f"(or run without --ray, in this process) [{error}]"
        ) from error
    return ray


def actor_resources(cluster_cpus: float, actors: int, gpus_per_actor: float | None) -> dict[str, float]:
    """What each actor reserves: its GPUs, and CPUs that leave at least one for reading.

    With every CPU held by actors, Ray Data's read tasks never get one and the job waits forever;
    so actors reserve at most one CPU each, less on a small machine. The reservation is for the
    scheduler only: the threads an actor computes with are set by :class:`EmbedBatches`.
    """
    cpus = min(1.0, max(0.1, (cluster_cpus - 1) / actors))
    resources = {"num_cpus": round(cpus, 3)}
    if gpus_per_actor:
        resources["num_gpus"] = gpus_per_actor
    return resources


class EmbedBatches:
    """The map_batches callable: constructed once per actor (the model loads once), called per batch."""

    def __init__(
        self,
        options: dict[str, Any],
        *,
        side: str,
        task: TaskLike,
        dtype: str,
        text_column: bool,
        actors: int,
    ) -> None:
        logging.getLogger("qzhou_plugins").addFilter(FirstOfEachWarning())  # for the actor's life
        self.encoder = Encoder.shared(options)
        if self.encoder.device is not None and self.encoder.device.type == "cpu":
            share_cpu_threads(actors)
        fingerprint = make_fingerprint(
            self.encoder, side=side, task=task, dtype=dtype, text_column=text_column
        )
        self.fingerprint = _json(fingerprint)
        self.prefix = str(fingerprint["prefix"])
        self.what = f"{side} texts"
        self.dtype = dtype
        self.text_column = text_column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(text) for text in batch["text"]]
        vectors = self.encoder.encode_with_prefix(texts, self.prefix, what=self.what, show_progress=False)
        fingerprints = np.full(len(texts), "", dtype=object)
        fingerprints[:1] = self.fingerprint  # once per batch: the driver checks every batch's
        result = {
            "id": batch["id"],
            "embedding": storage_rows(vectors, self.dtype),
            "tokens": token_counts(self.encoder, self.prefix, texts),
            "fingerprint": fingerprints,
            "metadata": batch["metadata"],
        }
        if self.text_column:
            result["text"] = batch["text"]
        return result


def describe(
    options: dict[str, Any], side: str, task: TaskLike, dtype: str, text_column: bool
) -> dict[str, Any]:
    """The fingerprint of these settings, computed where the actors would run (a Ray task)."""
    encoder = Encoder.shared(options)
    return make_fingerprint(encoder, side=side, task=task, dtype=dtype, text_column=text_column)


def _json(fingerprint: dict[str, Any]) -> str:
    import json

    return json.dumps(fingerprint, sort_keys=True)


def embed_on_ray(
    source: Source,
    *,
    options: dict[str, Any],
    settings: dict[str, Any],
    actors: int,
    gpus_per_actor: float | None,
    done: IdHashes,
    pending: int,
    accept: Callable[[dict[str, Any]], ShardWriter],
    progress: Progress,
    batch_rows: int = BATCH_ROWS,
) -> None:
    """Run the pipeline and write what it yields; ``accept`` checks the fingerprint and gives the writer.

    ``settings`` holds side, task, dtype and text_column. With nothing pending no actor is started:
    one task computes the fingerprint, so that a rerun with other settings is still refused.
    """
    ray = import_ray()
    resources = actor_resources(float(ray.cluster_resources().get("CPU", 1)), actors, gpus_per_actor)
    if pending == 0:
        remote = ray.remote(describe).options(**resources)
        accept(ray.get(remote.remote(options, **settings))).flush()
        return
    with _quiet_ray_data(ray):  # before the dataset is made: it keeps a copy of the context
        dataset = source.ray_dataset(ray.data, done.sorted).map_batches(
            EmbedBatches,
            fn_constructor_kwargs={"options": options, "actors": actors, **settings},
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=batch_rows,
            batch_format="numpy",
            **resources,
        )
        writer = _write_batches(dataset, accept, progress)
    if writer is not None:
        writer.flush()


def _write_batches(
    dataset: Any, accept: Callable[[dict[str, Any]], ShardWriter], progress: Progress
) -> ShardWriter | None:
    """Hand each row the pipeline yields to the writer once, after checking its fingerprint."""
    import json

    writer: ShardWriter | None = None
    accepted = ""
    written: set[int] = set()  # ids written in this run: a block Ray delivers twice is not stored twice
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for text in set(batch["fingerprint"].tolist()) - {""}:
            if text != accepted:
                writer, accepted = accept(json.loads(text)), text
        if writer is None:  # every actor batch carries it in its first row: never split from it
            raise RuntimeError("Ray delivered rows without the fingerprint of the model that made them")
        keys = hash_ids(batch["id"].tolist()).tolist()
        fresh = np.array([key not in written for key in keys], dtype=bool)
        written.update(keys)
        if fresh.any():
            texts = batch["text"][fresh].tolist() if "text" in batch else None
            metadata = batch["metadata"][fresh].tolist()
            writer.add(batch["id"][fresh].tolist(), batch["embedding"][fresh], texts, metadata)
            progress.update(int(fresh.sum()), int(batch["tokens"][fresh].sum()))
    return writer


@contextlib.contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """Ray Data's own progress bars off while ours runs (restored after: the session may be the caller's)."""
    context = ray.data.DataContext.get_current()
    before = (context.enable_progress_bars, context.print_on_execution_start)
    context.enable_progress_bars, context.print_on_execution_start = False, False
    try:
        yield
    finally:
        context.enable_progress_bars, context.print_on_execution_start = before
