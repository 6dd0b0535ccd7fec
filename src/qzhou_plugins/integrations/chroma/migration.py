"""Re-embedding a collection with another model or task, without risking the original.

The records are copied, with their ids and metadata, into a target collection that records the new
setup. In place, the target is a staging collection named after the new setup (so an interrupted
run resumes where it stopped); it is checked to hold every id, and only then swapped in: the
original is renamed aside, the staging one takes its name, and the original is deleted last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from tqdm.auto import tqdm

from ...config import model_name
from ...encoder import Encoder
from ...instructions import TaskLike
from .embedding_function import QZhouEmbeddingFunction
from .fingerprint import PERSISTED_OPTIONS, same_model

logger = logging.getLogger("qzhou_plugins")

NAME_ROOM = 480
"""Characters of the original name kept in staging names, under Chroma's 512 with the suffix."""


@dataclass(frozen=True)
class Plan:
    """The setup to re-embed with: model, task and the encoder options that change vectors."""

    model: str
    task: TaskLike
    options: dict[str, Any]


def plan(
    current: QZhouEmbeddingFunction,
    model: str | os.PathLike[str] | None,
    task: TaskLike,
    encoder_options: dict[str, Any],
) -> Plan:
    """``model=None`` / ``task=None`` keep the current ones, and the same model its recorded options."""
    chosen_model = model_name(model) if model is not None else current.model
    options = dict(encoder_options)
    if same_model(chosen_model, current.model):
        recorded = current.get_config()
        options = {key: recorded[key] for key in PERSISTED_OPTIONS} | options
    return Plan(chosen_model, task if task is not None else current.task, options)


def staging_name(name: str, setup: Plan) -> str:
    """The same name for the same source and new setup, so that a rerun resumes the staging copy."""
    encoder = Encoder.shared(model=setup.model, **setup.options)
    config = QZhouEmbeddingFunction.from_encoder(encoder, setup.task).get_config()
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return f"{name[:NAME_ROOM]}-reembed-{digest}"


def check_documents_stored(source: Collection) -> None:
    """Refuse, before anything is written, a collection with records that have no document."""
    missing = [
        id_
        for found in pages(source, ["documents"])
        for id_, document in zip(found["ids"], found["documents"], strict=True)
        if document is None
    ]
    if missing:
        raise ValueError(
            f"{len(missing)} records of {source.name!r} have no stored document, so they cannot be "
            f"re-embedded (first: {', '.join(missing[:5])}); nothing was changed"
        )


def copy_records(
    source: Collection, target: Collection, add: Callable[..., Any], batch_size: int, show: bool
) -> None:
    """Give every record of ``source`` to ``add`` (the target's, which skips what it has), then check ids."""
    with tqdm(total=source.count(), unit="text", desc=f"Re-embedding {source.name}", disable=not show) as bar:
        for found in pages(source, ["documents", "metadatas"], page=batch_size):
            metadatas = found["metadatas"] or [None] * len(found["ids"])
            add(found["documents"], metadatas, found["ids"], batch_size=batch_size, show_progress=False)
            bar.update(len(found["ids"]))
    source_ids, target_ids = _ids(source), _ids(target)
    if source_ids != target_ids:
        raise RuntimeError(
            f"re-embedding {source.name!r} into {target.name!r} ended with {len(target_ids)} records for "
            f"{len(source_ids)} source records (was {source.name!r} written to meanwhile?); the original "
            "is untouched, run reembed again"
        )


def swap_in(client: ClientAPI, source: Collection, target: Collection, model: str) -> None:
    """Give ``target`` the name of ``source``, whose collection is deleted last."""
    aside = f"{source.name[:NAME_ROOM]}-replaced-{uuid.uuid4().hex[:12]}"
    original_name = source.name
    source.modify(name=aside)
    target.modify(name=original_name)
    client.delete_collection(aside)
    logger.info("re-embedded %r with %r; the previous vectors were deleted", original_name, model)


def pages(collection: Collection, include: list[str], page: int = 1000) -> Iterator[dict[str, Any]]:
    """The whole collection, ``page`` records at a time (``include`` as in ``Collection.get``)."""
    offset = 0
    while True:
        found = collection.get(include=include, limit=page, offset=offset)  # type: ignore[arg-type]
        if found["ids"]:
            yield dict(found)
        if len(found["ids"]) < page:
            return
        offset += page


def _ids(collection: Collection) -> set[str]:
    return {id_ for found in pages(collection, []) for id_ in found["ids"]}
