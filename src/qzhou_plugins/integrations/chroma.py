"""Chroma 1.x: a QZhou embedding function that Chroma persists with the collection.

Chroma stores an embedding function's ``name()`` and ``get_config()`` in the collection's
configuration and rebuilds it with ``build_from_config`` whenever the collection is opened without
one. The config therefore has to say everything that decides the vectors (model, the exact query and
document prefixes, pooling, normalisation, dimension) and nothing that only describes this machine
(device, batch budget, attention kernel), so that a collection opened in another process, or on
another host, embeds new texts and queries exactly as the stored ones were.

The recorded prefixes, not the task name, are what is replayed: if a later version of the package
changed a task's instruction, an existing collection keeps the instruction its vectors were made
with. :class:`~qzhou_plugins.integrations.chroma_collection.QZhouCollection` builds on this function
and adds the refusal of mismatched reopenings, resumable ingestion and reranked queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("qzhou_plugins.chroma needs chromadb: pip install 'qzhou-plugins[chroma]'") from error

from ..config import DEFAULT_MODEL, EncoderConfig
from ..encoder import Encoder
from ..validation import validate_texts
from ..instructions import Task, TaskLike, TaskType, resolve_task

EMBEDDING_FUNCTION_NAME = "qzhou"
"""The name under which Chroma records and finds this embedding function."""

CONFIG_VERSION = 1

PERSISTED_OPTIONS = ("max_length", "normalize", "dtype", "pooling", "bidirectional")
"""Encoder options that change the vectors: recorded in the collection and replayed on reopening."""

FINGERPRINT_KEYS = ("model", "dimension", "query_prefix", "document_prefix", "pooling", "normalize")
"""What must be equal for new vectors to be comparable with the stored ones."""

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
}


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
    from pathlib import Path

    paths = [Path(name).expanduser() for name in (first, second)]
    return all(path.is_dir() for path in paths) and paths[0].resolve() == paths[1].resolve()


def fingerprint(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an embedding function config that decides whether two vectors are comparable."""
    return {key: config.get(key) for key in FINGERPRINT_KEYS}


def fingerprint_differences(
    recorded: Mapping[str, Any],
    wanted: Mapping[str, Any],
    labels: tuple[str, str] = ("the collection has", "you asked for"),
) -> list[str]:
    """One line per fingerprint field that differs between two embedding function configs."""
    lines = []
    for key in FINGERPRINT_KEYS:
        old, new = recorded.get(key), wanted.get(key)
        equal = same_model(old, new) if key == "model" and old and new else old == new
        if not equal:
            lines.append(f"{key.replace('_', ' ')}: {labels[0]} {old!r}, {labels[1]} {new!r}")
    return lines


@register_embedding_function
class QZhouEmbeddingFunction(EmbeddingFunction[Documents]):
    """A Chroma embedding function on the process-wide shared model.

    ``__call__`` embeds documents (the document side of ``task``: no instruction for retrieval),
    ``embed_query`` embeds queries (instructed). Chroma calls the first when adding texts and the
    second for ``query(query_texts=...)``. The model is loaded on first use and shared with every
    other adapter of this process that asks for the same model.

    ``model`` is stored as given: prefer a hub id or :data:`qzhou_plugins.DEMO_MODEL` over a local
    path, which would not exist on another host. ``encoder_options`` are the fields of
    :class:`~qzhou_plugins.EncoderConfig`; only those that change the vectors are persisted.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        task: TaskLike = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        dimension: int | None = None,
        **encoder_options: Any,
    ) -> None:
        resolve_task(task)  # an unknown task name fails here, not at the first embedding
        self._encoder_config = EncoderConfig(model=model, **encoder_options)
        self._task = task
        if (query_prefix is None) != (document_prefix is None):
            raise ValueError("give both query_prefix and document_prefix, or neither")
        recorded = query_prefix is not None and document_prefix is not None
        self._prefixes = (query_prefix, document_prefix) if recorded else None
        self._expected_dimension = dimension
        self._encoder: Encoder | None = None

    @classmethod
    def from_encoder(
        cls, encoder: Encoder, task: TaskLike = None, *, prefixes: tuple[str, str] | None = None
    ) -> QZhouEmbeddingFunction:
        """The embedding function of an encoder already in hand (no second lookup or load).

        ``prefixes`` replays recorded (query, document) prefixes instead of deriving them from ``task``.
        """
        query_prefix, document_prefix = prefixes if prefixes is not None else (None, None)
        options = encoder.config.model_dump()
        function = cls(task=task, query_prefix=query_prefix, document_prefix=document_prefix, **options)
        function._encoder = encoder
        return function

    # -- the model ----------------------------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The shared encoder, loaded on first use; its dimension is checked against the record."""
        if self._encoder is None:
            encoder = Encoder.shared(self._encoder_config)
            if self._expected_dimension is not None and encoder.dimension != self._expected_dimension:
                raise ValueError(
                    f"model {self._encoder_config.model!r} now gives {encoder.dimension}-dimensional "
                    f"vectors, but this collection holds {self._expected_dimension}-dimensional ones: "
                    "the checkpoint behind that name has changed. Point model at the original checkpoint "
                    "or re-embed the collection (QZhouCollection.reembed)."
                )
            self._encoder = encoder
        return self._encoder

    @property
    def model(self) -> str:
        return self._encoder_config.model

    @property
    def task(self) -> TaskLike:
        return self._task

    @property
    def prefixes(self) -> tuple[str, str]:
        """(query prefix, document prefix): the recorded ones, else those of the model for ``task``."""
        if self._prefixes is None:
            self._prefixes = self.encoder.prefixes(self._task)
        return self._prefixes

    @property
    def dimension(self) -> int:
        return self._expected_dimension if self._expected_dimension is not None else self.encoder.dimension

    def embed_documents(self, texts: Documents, *, show_progress: bool | None = None) -> np.ndarray:
        """Document-side vectors as one float32 array (what the collection helper stores)."""
        checked = validate_texts(texts, what="documents")
        prefixed = [self.prefixes[1] + text for text in checked]
        return self.encoder.encode_with_prefix(prefixed, "", show_progress=show_progress)

    def embed_queries(self, texts: Documents, *, show_progress: bool | None = None) -> np.ndarray:
        """Query-side vectors as one float32 array."""
        checked = validate_texts(texts, what="queries")
        prefixed = [self.prefixes[0] + text for text in checked]
        return self.encoder.encode_with_prefix(prefixed, "", show_progress=show_progress)

    # -- the Chroma protocol ------------------------------------------------------------------------

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embed_documents(input))

    def embed_query(self, input: Documents) -> Embeddings:
        return list(self.embed_queries(input))

    @staticmethod
    def name() -> str:
        return EMBEDDING_FUNCTION_NAME

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        # On unit vectors the three spaces rank alike; without normalisation only cosine is meaningful.
        return ["cosine", "ip", "l2"] if self._encoder_config.normalize else ["cosine"]

    def get_config(self) -> dict[str, Any]:
        query_prefix, document_prefix = self.prefixes
        options = self._encoder_config.model_dump(include=set(PERSISTED_OPTIONS))
        if options["pooling"] is None:
            options["pooling"] = self.encoder.pooling
        return {
            "version": CONFIG_VERSION,
            "model": self.model,
            "task": task_to_config(self._task),
            "query_prefix": query_prefix,
            "document_prefix": document_prefix,
            "dimension": self.dimension,
            **options,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> QZhouEmbeddingFunction:
        QZhouEmbeddingFunction.validate_config(config)
        options = {key: config[key] for key in PERSISTED_OPTIONS if key in config}
        return QZhouEmbeddingFunction(
            config["model"],
            task=task_from_config(config.get("task")),
            query_prefix=config["query_prefix"],
            document_prefix=config["document_prefix"],
            dimension=config["dimension"],
            **options,
        )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Refuse a config that is incomplete, mistyped or from a newer format, naming each problem."""
        if not isinstance(config, Mapping):
            raise ValueError(f"an embedding function config must be a mapping, not {type(config).__name__}")
        problems = []
        required = ("model", "query_prefix", "document_prefix", "dimension")
        problems += [f"missing {key!r}" for key in required if key not in config]
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

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        """Allow changes that keep old and new vectors comparable (max_length, dtype) and nothing else."""
        differences = fingerprint_differences(old_config, new_config)
        if differences:
            raise ValueError(
                "this change would make new vectors incomparable with the stored ones ("
                + "; ".join(differences)
                + "). Re-embed into a new collection instead (QZhouCollection.reembed)."
            )

    def __repr__(self) -> str:
        return f"QZhouEmbeddingFunction(model={self.model!r}, task={self._task!r})"
