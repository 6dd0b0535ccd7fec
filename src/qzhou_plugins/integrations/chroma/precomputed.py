"""Loading a finished bulk output (``qzhou-plugins embed``) into a collection, without re-embedding.

The vectors of a corpus embedded on a cluster are stored as they are; what makes them safe to mix
with anything else is the fingerprint the output records (model, dimension, exact query and
document prefixes, normalisation, pooling, length):

- a new collection is created *from* that fingerprint, recording the output's exact prefixes, so
  its query side embeds questions the way the output was meant to be searched, and a later
  :meth:`~QZhouCollection.add` embeds new texts the way the output's were;
- an existing collection is compared with it (the comparison every opening uses,
  :func:`.fingerprint.fingerprint_differences`, plus the length) and a mismatch is refused before
  anything is written;
- an output of query-side vectors is refused: stored as documents they would be silently wrong.

No model is loaded to load vectors: the collection's embedding function loads it when it is first
asked to embed (a query, an ``add``). The one exception is comparing lengths with a collection that
records none (made with the model's default length): that default is the model's to say.

Writing is :func:`.writing.write_batch`, the one path every record takes into Chroma: the rows become
records that carry their vectors, so nothing is embedded and the one check under the lock, right
before the write, decides what is added and what is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from tqdm.auto import tqdm

from ...encoder import wants_progress
from .embedding_function import QZhouEmbeddingFunction
from .fingerprint import (
    CONFIG_VERSION,
    CollectionMismatchError,
    check_config,
    fingerprint_differences,
    recorded_config,
    recorded_family,
)
from .lexical_record import creation_settings, settle_settings
from .metadata import checked_metadata
from .opening import CollectionNotFoundError, create_collection, existing_collection
from .records import Record
from .writing import AddResult, LexicalSync, write_batch

if TYPE_CHECKING:
    from ...bulk.load import VectorBatch

DEFAULT_LOAD_BATCH = 1024
"""Vectors per Chroma write: large enough to amortise a write, small enough to keep memory flat."""

Output = str | os.PathLike[str]


def output_config(output: Output) -> dict[str, Any]:
    """The embedding function config of the vectors in a finished ``output``.

    An unfinished output and one of query-side vectors are refused here, before any collection is
    opened.
    """
    from ...bulk.load import read_fingerprint  # pyarrow and the bulk job only when loading

    recorded = read_fingerprint(output)
    if recorded.get("side") != "document":
        raise ValueError(
            f"{os.fspath(output)} holds {recorded.get('side')}-side vectors (prefix "
            f"{recorded.get('prefix')!r}); a collection stores documents, and query vectors there would "
            "rank silently wrong. Embed the corpus again with --side document (the default)."
        )
    config = {
        "version": CONFIG_VERSION,
        "model": recorded.get("model"),
        "task": recorded.get("task"),
        **{key: recorded.get(key) for key in ("query_prefix", "document_prefix", "dimension")},
        **{key: recorded.get(key) for key in ("max_length", "normalize", "pooling")},
        # Recorded by newer outputs only: an older one says none, and is taken as the model's now.
        **{key: recorded[key] for key in ("family", "dimensions", "vector_family") if key in recorded},
        **({"source_model": recorded["source_model"]} if recorded.get("source_model") else {}),
    }
    if config.get("family") is not None:
        config["family"] = recorded_family(config["family"])
    check_config(config)  # a damaged fingerprint is named here, not deep inside Chroma
    return config


def open_for_output(
    client: ClientAPI,
    name: str,
    output: Output,
    *,
    create: bool,
    lexical: tuple[str | None, str | None] = (None, None),
) -> tuple[Collection, QZhouEmbeddingFunction]:
    """Collection ``name`` with an embedding function that loads no model until asked to embed.

    An existing collection must match the output (else nothing is written) and the lexical settings
    asked (analyzer, engine; None: as recorded); a new one is created with the output's model,
    options and exact prefixes, and records the lexical settings.
    """
    wanted = output_config(output)
    existing = existing_collection(client, name)
    if existing is not None:
        settle_settings(existing, *lexical)
        function = QZhouEmbeddingFunction.build_from_config(check_output(existing, wanted, output))
        return client.get_collection(name, embedding_function=function), function  # type: ignore[arg-type]
    if not create:
        raise CollectionNotFoundError(f"no collection named {name!r} in this Chroma database")
    function = QZhouEmbeddingFunction.build_from_config(wanted)
    check = lambda made: check_output(made, wanted, output)  # noqa: E731
    return create_collection(client, name, function, check=check, metadata=creation_settings(*lexical))


def check_output(collection: Collection, wanted: Mapping[str, Any], output: Output) -> dict[str, Any]:
    """The collection's recorded config, if the output's vectors are comparable with its own.

    Otherwise a :class:`CollectionMismatchError` naming every difference; nothing is written.
    """
    recorded = recorded_config(collection)
    labels = ("the collection has", "the output has")
    differences = fingerprint_differences(recorded, wanted, labels)
    if not differences:
        length = recorded.get("max_length")
        if length is None:  # the model's default: only the model can say (this loads it, once)
            length = QZhouEmbeddingFunction.build_from_config(recorded).encoder.max_length
        if length != wanted["max_length"]:
            differences.append(f"max length: {labels[0]} {length!r}, {labels[1]} {wanted['max_length']!r}")
    if differences:
        listed = "".join(f"\n  - {line}" for line in differences)
        raise CollectionMismatchError(
            f"collection {collection.name!r} was built with another embedding setup than the vectors in "
            f"{os.fspath(output)}, so they would not be comparable with its stored ones:{listed}\n"
            "The collection was left untouched. Load into another collection (a new name is created "
            "from the output), or embed the corpus again with the collection's model and options."
        )
    return recorded


def add_output(
    client: ClientAPI,
    collection: Collection,
    output: Output,
    batch_size: int,
    show_progress: bool | None,
    lexical: LexicalSync | None = None,
) -> AddResult:
    """Stream ``output`` into ``collection``, ``batch_size`` vectors at a time; stored ids are skipped.

    The lexical index is kept in step (a record stored without a document is indexed as an empty text).
    """
    from ...bulk.load import iter_vectors, read_manifest

    check_output(collection, output_config(output), output)
    rows = int(read_manifest(output)["rows"])
    show = wants_progress(show_progress, rows)
    result = AddResult(added=0, skipped=0)
    name = Path(os.fspath(output)).name
    with tqdm(total=rows, unit="vector", desc=f"Loading {name}", disable=not show) as progress:
        for batch in iter_vectors(output, batch_size=batch_size):
            result += write_batch(client, collection, vector_records(batch), lexical=lexical)
            progress.update(len(batch.ids))
    return result


def vector_records(batch: VectorBatch) -> list[Record]:
    """The rows of ``batch`` as records that carry their vectors, texts (if kept) and metadata.

    The metadata is checked as ``add`` checks it, naming the shard and row (``embed`` checked it
    already; an output altered since is refused here, before its batch is written).
    """
    rows = range(len(batch.ids))
    texts = batch.texts if batch.texts is not None else [None] * len(rows)
    metadatas = batch.metadatas if batch.metadatas is not None else [None] * len(rows)
    return [
        Record(
            id=batch.ids[row],
            text=texts[row],
            metadata=checked_metadata(metadatas[row], f"{batch.place(row)}: metadata"),
            vector=batch.vectors[row],
        )
        for row in rows
    ]
