"""What a collection records about its vectors, and how a wish is compared with the record.

Chroma persists an embedding function's ``name()`` and ``get_config()`` with the collection. The
config says everything that decides the vectors (model, the exact query and document prefixes,
pooling, normalisation, dimension, the model family and its Matryoshka size) and nothing that only
describes a machine (device, batch budget, attention kernel). Its *fingerprint*, the part that must
be equal for new vectors to be comparable with the stored ones, is also copied into the collection
metadata at creation, because Chroma rewrites the config on ``collection.modify`` before it asks the
function whether it may.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chromadb.api.models.Collection import Collection

from ...families import known_families
from ...instructions import Task, TaskLike, TaskType

EMBEDDING_FUNCTION_NAME = "qzhou"
"""The name under which Chroma records and finds this embedding function."""

CONFIG_VERSION = 1

PERSISTED_OPTIONS = ("max_length", "normalize", "dtype", "pooling", "bidirectional", "family", "dimensions")
"""Encoder options that change the vectors: recorded in the collection and replayed on reopening.
``family`` is recorded as the model's (None for a served model of unknown family), so that a query
never embeds with another family's rules; ``dimensions`` is the Matryoshka size (None: the full one).
Collections made before they existed record neither: theirs are what the model gives now."""

FINGERPRINT_KEYS = (
    "model",
    "dimension",
    "query_prefix",
    "document_prefix",
    "pooling",
    "normalize",
    "vector_family",
    "family",
)
"""What must be equal for new vectors to be comparable with the stored ones. ``model`` is the model the
vectors come from: for a GGUF file, the checkpoint it was exported from (``source_model``), so that a
file and its source share a collection when their ``vector_family`` agrees too (see below)."""

REFERENCE_VECTORS = "reference"
"""The vector family of the torch encoder and of the runtimes measured interchangeable with it (f16
GGUF files); a quantised GGUF file has its own (``gguf-q8_0``). Collections made before families
existed record none: theirs is this one."""

FINGERPRINT_METADATA_KEY = "qzhou:fingerprint"
"""Collection metadata key of the fingerprint (model, dimension, prefixes, ...) written at creation."""

_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "version": (int,),
    "model": (str,),
    "task": (str, dict, type(None)),
    "query_prefix": (str,),
    "document_prefix": (str,),
    "dimension": (int,),
    "max_length": (int, type(None)),
    "normalize": (bool,),
    "dtype": (str,),
    "pooling": (str,),
    "bidirectional": (bool, type(None)),
    "source_model": (str,),
    "vector_family": (str,),
    "family": (str, type(None)),
    "dimensions": (int, type(None)),
}


class CollectionMismatchError(ValueError):
    """The collection was built with another model, dimension or instruction set."""


def task_to_config(task: TaskLike) -> str | dict[str, Any] | None:
    """A JSON-friendly form of ``task`` that :func:`task_from_config` turns back into the same task."""
    if task is None or isinstance(task, str):
        return task.value if isinstance(task, TaskType) else task
    if isinstance(task, Task):
        return task.model_dump()
    raise TypeError(f"task must be a string, a TaskType, a Task or None, not {type(task).__name__}")


def task_from_config(value: str | Mapping[str, Any] | None) -> TaskLike:
    if value is None or isinstance(value, str):
        return value
    return Task(**dict(value))


def same_model(first: str, second: str) -> bool:
    """Two model names mean the same checkpoint: equal names, or two spellings of one local folder.

    A hub id is never resolved here (that could download a model just to compare names).
    """
    if first == second:
        return True
    paths = [Path(name).expanduser() for name in (first, second)]
    return all(path.is_dir() for path in paths) and paths[0].resolve() == paths[1].resolve()


def recorded_family(family: str) -> str | None:
    """A model's family as a collection records it: None for a served model of unknown family (there
    are no rules to replay, and ``family="served"`` names no record)."""
    return family if family in known_families() else None


def fingerprint(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an embedding function config that decides whether two vectors are comparable."""
    found = {key: config.get(key) for key in FINGERPRINT_KEYS}
    found["model"] = config.get("source_model") or config.get("model")
    found["vector_family"] = config.get("vector_family") or REFERENCE_VECTORS
    return found


def fingerprint_differences(
    recorded: Mapping[str, Any],
    wanted: Mapping[str, Any],
    labels: tuple[str, str] = ("the collection has", "you asked for"),
) -> list[str]:
    """One line per fingerprint field that differs between two embedding function configs."""
    lines = []
    before, after = fingerprint(recorded), fingerprint(wanted)
    for key in FINGERPRINT_KEYS:
        old, new = before[key], after[key]
        equal = same_model(old, new) if key == "model" and old and new else old == new
        if key == "family" and (old is None or new is None):
            equal = True  # not recorded (an older collection, a served model of unknown family)
        if not equal:
            lines.append(f"{key.replace('_', ' ')}: {labels[0]} {old!r}, {labels[1]} {new!r}")
            if key == "vector_family":
                lines[-1] += (
                    f" ({REFERENCE_VECTORS!r}: the torch encoder and GGUF types measured interchangeable "
                    "with it; a quantised GGUF type's vectors are another family)"
                )
            if key == "family":
                lines[-1] += " (its attention, pooling and instructions; family= names one)"
            if key == "dimension" and (recorded.get("dimensions") or wanted.get("dimensions")):
                lines[-1] += " (dimensions= cuts a Matryoshka model's vectors to that size)"
    return lines


def check_config(config: Any) -> None:
    """Refuse a config that is incomplete, mistyped or from a newer format, naming each problem."""
    if not isinstance(config, Mapping):
        raise ValueError(f"an embedding function config must be a mapping, not {type(config).__name__}")
    problems = [f"missing {key!r}" for key in ("model", "query_prefix", "document_prefix", "dimension")
                if key not in config]  # fmt: skip
    unknown = sorted(set(config) - set(_CONFIG_TYPES))
    if unknown:
        problems.append(f"unknown keys {unknown} (written by a newer qzhou-plugins? upgrade it)")
    for key, types in _CONFIG_TYPES.items():
        value = config.get(key)
        wrong_bool = isinstance(value, bool) and bool not in types
        if key in config and (wrong_bool or not isinstance(value, types)):
            problems.append(f"{key!r} is a {type(value).__name__}")
    if isinstance(config.get("dimension"), int) and config["dimension"] < 1:
        problems.append(f"'dimension' is {config['dimension']}")
    if isinstance(config.get("version"), int) and config["version"] > CONFIG_VERSION:
        problems.append(f"version {config['version']} is newer than this package's {CONFIG_VERSION}")
    if problems:
        listed = "; ".join(problems)
        raise ValueError(f"invalid {EMBEDDING_FUNCTION_NAME!r} embedding function config: {listed}")


def creation_metadata(config: Mapping[str, Any]) -> dict[str, str]:
    """The collection metadata written at creation: a copy of the fingerprint of its vectors."""
    return {FINGERPRINT_METADATA_KEY: json.dumps(fingerprint(config))}


def recorded_config(collection: Collection) -> dict[str, Any]:
    """The persisted QZhou embedding function config, or a mismatch error if the collection has none."""
    persisted = collection.configuration_json.get("embedding_function") or {}
    if persisted.get("name") != EMBEDDING_FUNCTION_NAME:
        what = persisted.get("name") or "none recorded"
        raise CollectionMismatchError(
            f"collection {collection.name!r} was not made with QZhouEmbeddingFunction (its embedding "
            f"function: {what}), so its vectors cannot be compared with ours. It was left untouched; use "
            "another collection name, or open it with chromadb and the embedding function it was made with."
        )
    config = dict(persisted.get("config") or {})
    check_config(config)
    # Chroma writes a collection.modify(configuration=...) before it asks the embedding function
    # whether the update is acceptable, so the record can have changed under the vectors: the copy
    # of the fingerprint kept in the collection metadata at creation tells.
    written = (collection.metadata or {}).get(FINGERPRINT_METADATA_KEY)
    if isinstance(written, str):
        differences = fingerprint_differences(
            json.loads(written), config, labels=("the vectors were made with", "the record now says")
        )
        if differences:
            raise CollectionMismatchError(
                f"the embedding function recorded in collection {collection.name!r} was changed after its "
                f"vectors were written (with collection.modify?):{_listed(differences)}\nIt was left "
                "untouched. Put the original embedding function back, or copy its documents into a new "
                "collection."
            )
    return config


def check_recorded(collection: Collection, wanted: Mapping[str, Any]) -> None:
    """Refuse ``collection`` if its record differs from the ``wanted`` config in its fingerprint."""
    differences = fingerprint_differences(recorded_config(collection), wanted)
    if differences:
        raise mismatch_error(collection.name, differences)


def mismatch_error(name: str, differences: list[str]) -> CollectionMismatchError:
    """What differs between a collection's record and what was asked for, and how to proceed."""
    return CollectionMismatchError(
        f"collection {name!r} was built with another embedding setup, and new vectors would not be "
        f"comparable with its stored ones:{_listed(differences)}\n"
        "The collection was left untouched. To proceed: open it with model=None and task=None to use what "
        f"it records; or use another collection name; or migrate it explicitly with "
        f"QZhouCollection.open({name!r}).reembed(model=..., task=...)."
    )


def _listed(lines: list[str]) -> str:
    return "".join(f"\n  - {line}" for line in lines)
