"""Opening a collection: check the name and the place, then create it or check what it records.

A name Chroma would refuse, or a path that is a file, is refused here in our words (Chroma's own
messages come from its Rust core: ``File exists (os error 17)``). An existing collection is
compared with what is asked for before any model is loaded when the model name already differs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.errors import NotFoundError

from ...config import DEFAULT_MODEL, LOCAL_ONLY_OPTIONS, model_name
from ...encoder import Encoder
from ...instructions import TaskLike
from .embedding_function import QZhouEmbeddingFunction
from .fingerprint import (
    PERSISTED_OPTIONS,
    check_recorded,
    creation_metadata,
    fingerprint_differences,
    mismatch_error,
    recorded_config,
    same_model,
    task_from_config,
)
from .lexical_record import creation_settings, settle_settings

DEFAULT_PATH = "./chroma"
"""Where an embedded database is kept when neither a path nor a client is given."""

NAME_LENGTH = (3, 512)
_NAME_CHARACTERS = re.compile(r"[^a-zA-Z0-9._-]")
_ALPHANUMERIC = re.compile(r"[a-zA-Z0-9]")


class CollectionNotFoundError(LookupError):
    """``open(..., create=False)`` on a collection that does not exist."""


def check_name(name: Any) -> str:
    """A collection name by Chroma's rules, each broken rule said plainly (Chroma names none)."""
    if not isinstance(name, str):
        raise TypeError(f"a collection name must be a string, not {type(name).__name__} {name!r}")
    low, high = NAME_LENGTH
    problem = None
    if not low <= len(name) <= high:
        problem = f"it has {len(name)} characters, and Chroma needs {low} to {high}"
    elif found := _NAME_CHARACTERS.search(name):
        problem = (
            f"it has {found.group()!r} at character {found.start()}, and Chroma allows only ASCII "
            "letters, digits, '.', '_' and '-'"
        )
    elif not (_ALPHANUMERIC.fullmatch(name[0]) and _ALPHANUMERIC.fullmatch(name[-1])):
        problem = "it must start and end with an ASCII letter or digit"
    elif ".." in name:
        problem = "it has two periods in a row ('..')"
    elif _is_ip_address(name):
        problem = "it reads as an IP address, which Chroma does not allow"
    if problem:
        raise ValueError(f"invalid collection name {name!r}: {problem}")
    return name


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def connect(path: Any, client: ClientAPI | None) -> ClientAPI:
    """The client given, else an embedded database at ``path`` (:data:`DEFAULT_PATH` if None)."""
    if path is not None and client is not None:
        raise TypeError("pass either path (an embedded database) or client, not both")
    if client is not None:
        return client
    folder = database_folder(DEFAULT_PATH if path is None else path)
    # An absolute path: Chroma caches clients by path text, so a relative one would reach another
    # folder's database once the working directory changes.
    return chromadb.PersistentClient(path=str(folder.absolute()))


def database_folder(path: Any, what: str = "path") -> Path:
    """``path`` as the folder of an embedded database, refused (a ValueError) if it or a folder
    above it is a file: Chroma would say ``File exists (os error 17)``. ``what`` names the argument
    as its caller knows it (``path`` in Python, ``--db`` on the command line)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a folder name (str or os.PathLike), not {type(path).__name__}")
    given = os.fspath(path)
    folder = Path(given).expanduser()
    for place in (folder, *folder.absolute().parents):
        if place.exists():
            if not place.is_dir():
                which = repr(given) if place == folder else f"{str(place)!r}, on the way to {given!r},"
                raise ValueError(
                    f"{what} must be a folder (an embedded Chroma database is one, created if missing), "
                    f"and {which} is a file; give another {what}"
                )
            break
    return folder


def existing_collection(client: ClientAPI, name: str) -> Collection | None:
    try:
        # No embedding function here: building the persisted one would load its model before the check.
        return client.get_collection(name, embedding_function=None)  # type: ignore[arg-type]
    except NotFoundError:
        return None


def new_function(
    model: str | os.PathLike[str] | None, task: TaskLike, encoder_options: dict[str, Any]
) -> QZhouEmbeddingFunction:
    """The embedding function of a new collection: ``model`` (or the default one) for ``task``."""
    encoder = Encoder.shared(model=model if model is not None else DEFAULT_MODEL, **encoder_options)
    return QZhouEmbeddingFunction.from_encoder(encoder, task)


def open_or_create(
    client: ClientAPI,
    name: str,
    model: str | os.PathLike[str] | None,
    task: TaskLike,
    encoder_options: dict[str, Any],
    *,
    create: bool,
    lexical: tuple[str | None, str | None],
) -> tuple[Collection, QZhouEmbeddingFunction]:
    """Collection ``name`` reopened as it records (refused if asked otherwise), or created if allowed.

    ``lexical`` is the (analyzer, engine) asked for: an existing collection that records others is
    refused before any model is loaded; a new one records them (defaults for those not given).
    ``model`` may be a ``Path``: it is compared and recorded as its text (:func:`model_name`).
    """
    analyzer, engine = lexical
    model = None if model is None else model_name(model)
    existing = existing_collection(client, name)
    if existing is not None:
        settle_settings(existing, analyzer, engine)
        return reopen_collection(client, existing, model, task, encoder_options)
    if not create:
        raise CollectionNotFoundError(
            f"no collection named {name!r} in this Chroma database; create it with "
            f"QZhouCollection.open({name!r}) (create=True is the default)"
        )
    function = new_function(model, task, encoder_options)
    return create_collection(client, name, function, metadata=creation_settings(analyzer, engine))


def create_collection(
    client: ClientAPI,
    name: str,
    function: QZhouEmbeddingFunction,
    check: Callable[[Collection], object] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[Collection, QZhouEmbeddingFunction]:
    """A new collection in the cosine space, recording ``function`` and its fingerprint.

    ``metadata`` adds entries to the record (the lexical settings). Another process may have created
    it first, with other settings, so what is there is checked afterwards: by ``check`` if given (it
    raises on a mismatch), else against ``function``'s config.
    """
    collection = client.get_or_create_collection(
        name,
        embedding_function=function,  # type: ignore[arg-type]
        metadata={**creation_metadata(function.get_config()), **(metadata or {})},
    )
    if check is None:
        check_recorded(collection, function.get_config())
    else:
        check(collection)
    return collection, function


def reopen_collection(
    client: ClientAPI,
    existing: Collection,
    model: str | None,
    task: TaskLike,
    encoder_options: dict[str, Any],
) -> tuple[Collection, QZhouEmbeddingFunction]:
    """``existing`` with the embedding function it records, or what was asked if that is the same."""
    recorded = recorded_config(existing)
    converted = recorded["model"].lower().endswith(".gguf") or "source_model" in recorded
    if model in (None, recorded["model"]) and task is None and not encoder_options and not converted:
        # Nothing asked beyond the record: its embedding function as plain Chroma rebuilds it, whose
        # model loads on first use (a sync with nothing to embed, a lexical query, never load it) and
        # whose dimension is checked then.
        function = QZhouEmbeddingFunction.build_from_config(recorded)
        return client.get_collection(existing.name, embedding_function=function), function  # type: ignore[arg-type]
    chosen_model = model if model is not None else recorded["model"]
    # A GGUF file names its source model inside: compared below, once it is open (in seconds).
    converted = chosen_model.lower().endswith(".gguf") or "source_model" in recorded
    if not converted and not same_model(chosen_model, recorded["model"]):
        # Known to differ without loading anything (a 7B model takes minutes to load).
        differences = fingerprint_differences(recorded, {**recorded, "model": chosen_model})
        raise mismatch_error(existing.name, differences)
    options = {key: recorded[key] for key in PERSISTED_OPTIONS if key in recorded}
    if encoder_options.get("base_url") is not None:
        # A served model decides how it is loaded (dtype, attention) on its server; what must
        # match the stored vectors (model, dimension, prefixes, pooling) is still checked below.
        options = {key: value for key, value in options.items() if key not in LOCAL_ONLY_OPTIONS}
    options.update(encoder_options)
    encoder = Encoder.shared(model=chosen_model, **options)
    if task is None:
        # Replay the recorded prefixes exactly: a newer release may word a task's instruction
        # differently, and the stored vectors were made with the old wording.
        prefixes = (recorded["query_prefix"], recorded["document_prefix"])
        function = QZhouEmbeddingFunction.from_encoder(
            encoder, task_from_config(recorded.get("task")), prefixes=prefixes
        )
    else:
        function = QZhouEmbeddingFunction.from_encoder(encoder, task)
    check_recorded(existing, function.get_config())
    collection = client.get_collection(existing.name, embedding_function=function)  # type: ignore[arg-type]
    return collection, function
