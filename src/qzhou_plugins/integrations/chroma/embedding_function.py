"""The QZhou embedding function that Chroma persists with a collection and rebuilds anywhere.

Chroma stores an embedding function's ``name()`` and ``get_config()`` in the collection's
configuration and rebuilds it with ``build_from_config`` whenever the collection is opened without
one, so that a collection opened in another process, or on another host, embeds new texts and
queries exactly as the stored ones were (:mod:`.fingerprint` says what is recorded).

The recorded prefixes, not the task name, are what is replayed: if a later version of the package
changed a task's instruction, an existing collection keeps the instruction its vectors were made
with.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from ...config import DEFAULT_MODEL, EncoderConfig
from ...encoder import Encoder
from ...instructions import TaskLike, resolve_task
from .fingerprint import (
    CONFIG_VERSION,
    EMBEDDING_FUNCTION_NAME,
    PERSISTED_OPTIONS,
    REFERENCE_VECTORS,
    CollectionMismatchError,
    check_config,
    fingerprint_differences,
    recorded_family,
    task_from_config,
    task_to_config,
)


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
        vectors: tuple[str | None, str] | None = None,
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
        self._vectors = vectors
        self._recorded = False
        """Built from a record: its options (a family of None included) are what it says."""
        self._encoder: Encoder | None = None

    @classmethod
    def from_encoder(
        cls, encoder: Encoder, task: TaskLike = None, *, prefixes: tuple[str, str] | None = None
    ) -> QZhouEmbeddingFunction:
        """The embedding function of an encoder already in hand (no second lookup or load).

        ``prefixes`` replays recorded (query, document) prefixes instead of deriving them from ``task``.
        """
        query_prefix, document_prefix = prefixes if prefixes is not None else (None, None)
        options = encoder.config.given_options()
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
                raise CollectionMismatchError(
                    f"model {self._encoder_config.model!r} now gives {encoder.dimension}-dimensional "
                    f"vectors, but this collection holds {self._expected_dimension}-dimensional ones: "
                    "the checkpoint behind that name has changed. Point model at the original checkpoint "
                    "or re-embed the collection (QZhouCollection.reembed)."
                )
            self._encoder = encoder
        return self._encoder

    @property
    def model(self) -> str:
        return str(self._encoder_config.model)

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
    def vectors(self) -> tuple[str | None, str]:
        """(source model, vector family): the recorded ones, else the encoder's (a GGUF file says
        which checkpoint it comes from and whether its type keeps the reference vectors)."""
        if self._vectors is None:
            facts = self.encoder.facts
            self._vectors = (facts.source_model, facts.vector_family)
        return self._vectors

    @property
    def dimension(self) -> int:
        return self._expected_dimension if self._expected_dimension is not None else self.encoder.dimension

    def embed_documents(self, texts: Documents, *, show_progress: bool | None = None) -> np.ndarray:
        """Document-side vectors as one float32 array (what the collection helper stores)."""
        return self.encoder.encode_with_prefix(
            texts, self.prefixes[1], show_progress=show_progress, what="documents"
        )

    def embed_queries(self, texts: Documents, *, show_progress: bool | None = None) -> np.ndarray:
        """Query-side vectors as one float32 array."""
        return self.encoder.encode_with_prefix(
            texts, self.prefixes[0], show_progress=show_progress, what="queries"
        )

    # -- the Chroma protocol ------------------------------------------------------------------------

    def __call__(self, input: Documents) -> Embeddings:
        _refuse_nothing(input, "documents")
        return list(self.embed_documents(input))

    def embed_query(self, input: Documents) -> Embeddings:
        _refuse_nothing(input, "queries")
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
        if options["family"] is None and not self._recorded:
            options["family"] = recorded_family(self.encoder.family)
        source_model, vector_family = self.vectors
        return {
            "version": CONFIG_VERSION,
            "model": self.model,
            "task": task_to_config(self._task),
            "query_prefix": query_prefix,
            "document_prefix": document_prefix,
            "dimension": self.dimension,
            **options,
            # Only where they say something: a torch collection records what it always has.
            **({"source_model": source_model} if source_model else {}),
            **({"vector_family": vector_family} if vector_family != REFERENCE_VECTORS else {}),
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> QZhouEmbeddingFunction:
        check_config(config)
        options = {key: config[key] for key in PERSISTED_OPTIONS if key in config}
        function = QZhouEmbeddingFunction(
            config["model"],
            task=task_from_config(config.get("task")),
            query_prefix=config["query_prefix"],
            document_prefix=config["document_prefix"],
            dimension=config["dimension"],
            vectors=(config.get("source_model"), config.get("vector_family") or REFERENCE_VECTORS),
            **options,
        )
        function._recorded = True
        return function

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Refuse a config that is incomplete, mistyped or from a newer format, naming each problem."""
        check_config(config)

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


def _refuse_nothing(texts: Any, what: str) -> None:
    """Chroma's protocol has an embedding function return at least one vector: say so in our words.

    Otherwise ``function([])`` fails in Chroma's own check of the (empty) result, with a message
    about embeddings that the caller never gave.
    """
    if isinstance(texts, Sized) and not isinstance(texts, (str, bytes)) and len(texts) == 0:
        raise ValueError(
            f"QZhouEmbeddingFunction was given no {what} (an empty list): a Chroma embedding function "
            "must return at least one vector, so there is nothing it can do. Skip the call when there "
            "is nothing to embed."
        )
