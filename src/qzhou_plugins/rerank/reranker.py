"""The reranker: (query, candidates) in, one score per candidate out, whatever kind scores them.

Three kinds behind one class (see :data:`~qzhou_plugins.config.RerankerKind`): an ``embedding``
reranker is the cosine of the shared encoder's instructed query and each candidate (QZhou's MTEB
way, and the default for every embedding model); a ``cross-encoder`` or ``llm`` reranker scores each
pair through a :class:`~qzhou_plugins.backends.RerankBackend` (local torch or a served model). The
kind is read from the checkpoint unless the caller names it. Above the seam everything is shared:
validation, the instruction rule, equal pairs scored once, the one sort (:func:`rank`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..backends.base import RerankBackend, RerankerFacts
from ..backends.local.registry import at_release
from ..config import RerankerConfig, refuse_options_of_other_kinds
from ..encoder import Encoder, wants_progress
from ..instructions import TaskLike, TaskType, check_instruction, resolve_task
from .formats import lowest_score
from .scores import check_finite, cosine_scores

__all__ = ["Reranker", "detect_kind", "llm_instruction"]


def detect_kind(config: RerankerConfig) -> str:
    """The kind of reranker ``config``'s model is: as asked, else as its checkpoint or server says."""
    gguf = config.model.lower().endswith(".gguf")
    if config.kind == "embedding" and config.base_url is None and not gguf:
        from ..backends.local.reranker_loading import refuse_cross_encoder_as_embedder

        refuse_cross_encoder_as_embedder(config)
    if config.kind is not None:
        return config.kind
    if gguf:
        from ..backends.llama_cpp.reranking import gguf_kind

        return gguf_kind(config)  # a reranker's file by its rank pooling, else an embedder's
    if config.base_url is not None:
        from ..backends.remote_rerank import served_kind

        return served_kind(config)
    from ..backends.local.reranker_loading import checkpoint_kind

    return checkpoint_kind(config)


DEFAULT_TASKS = (TaskType.RETRIEVAL.value, TaskType.RERANKING.value)
"""Tasks whose instruction an LLM reranker takes from its template: its own words for "find what
answers the query" (Qwen3-Reranker's are the same as ours)."""


def llm_instruction(task: TaskLike) -> str | None:
    """The ``{instruction}`` of an LLM reranker's template for ``task``: None (the template's own
    default) for retrieval and reranking, else the task's instruction (an STS task's, a custom one)."""
    resolved = resolve_task(task)
    return None if resolved.name in DEFAULT_TASKS else resolved.instruction


class Reranker:
    """Scores candidates against a query with one model (see the module docstring).

    Construct it like an :class:`~qzhou_plugins.Encoder`: a :class:`RerankerConfig`, a mapping of
    its fields, or its fields as keywords. :meth:`shared` returns the one reranker of a
    configuration in this process; an embedding reranker also shares the encoder (and so the
    weights) of the same options with every embedder of them.
    """

    def __init__(
        self,
        config: RerankerConfig | Mapping[str, Any] | None = None,
        *,
        encoder: Encoder | None = None,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise TypeError("pass either a RerankerConfig or its fields as keywords, not both")
        if isinstance(config, Mapping):
            config = RerankerConfig(**config)
        elif config is not None and not isinstance(config, RerankerConfig):
            raise TypeError(
                "Reranker takes a RerankerConfig, a mapping of its fields or keywords, not "
                f"{type(config).__name__}"
            )
        if config is None and encoder is not None:
            config = RerankerConfig(**encoder.config.given_options(), kind="embedding")
        self.config: RerankerConfig = config if config is not None else RerankerConfig(**options)
        embeds = encoder is not None and self.config.kind == "embedding"  # a loaded encoder: no check
        self.kind: str = "embedding" if embeds else detect_kind(self.config)
        refuse_options_of_other_kinds(self.config, self.kind)
        self.encoder: Encoder | None = None
        self.backend: RerankBackend | None = None
        if self.kind == "embedding":
            self.encoder = encoder if encoder is not None else Encoder.shared(self.config.encoder_config())
            facts = self.encoder.facts
            self._facts = RerankerFacts(
                model=self.config.model,
                kind="embedding",
                score_scale="cosine",
                max_length=facts.max_length,
                position_limit=facts.position_limit,
                fingerprint={**facts.fingerprint, "kind": "embedding"},
                instructed=True,
                runtime=facts.runtime,
            )
        else:
            from ..backends import rerank_backend_for

            self.backend = rerank_backend_for(self.config, self.kind)
            self._facts = self.backend.facts

    @classmethod
    def shared(cls, config: RerankerConfig | Mapping[str, Any] | None = None, **options: Any) -> Reranker:
        """The process-wide reranker for this configuration (created on first use, once)."""
        if config is not None and options:
            raise TypeError("pass either a RerankerConfig or its fields as keywords, not both")
        if not isinstance(config, RerankerConfig):
            config = RerankerConfig(**(dict(config) if isinstance(config, Mapping) else options))
        with _shared_lock:
            reranker = _shared.get(config)
            if reranker is None:
                reranker = cls(config)
                _shared[config] = reranker
            return reranker

    @classmethod
    def of_encoder(cls, encoder: Encoder) -> Reranker:
        """The embedding reranker of an existing encoder (its weights, its instructions)."""
        return cls(encoder=encoder)

    # -- facts --------------------------------------------------------------------------------------

    @property
    def facts(self) -> RerankerFacts:
        return self._facts

    @property
    def score_scale(self) -> str:
        """``cosine``, ``probability`` or ``logit``: what a score and a threshold mean."""
        return self._facts.score_scale

    @property
    def lowest_score(self) -> float:
        """The score of an empty candidate under ``empty="lowest"``: below every real score."""
        return lowest_score(self._facts.score_scale)

    @property
    def model_name(self) -> str:
        return self.config.model

    # -- scoring ------------------------------------------------------------------------------------

    def score_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        *,
        task: TaskLike = TaskType.RERANKING,
        instruction: str | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """One score per pair ``(queries[i], documents[i])``; the texts must already be validated.

        ``instruction`` overrides the task's: the query-side instruction of an embedding reranker,
        the ``{instruction}`` of an LLM reranker's template (without one, the template's default for
        retrieval and reranking, see :func:`llm_instruction`). A cross-encoder takes none. Equal
        pairs are scored once, so they get equal scores; a score that is not finite is an error.
        """
        instruction = check_instruction(instruction)
        if len(queries) != len(documents):
            raise ValueError(f"{len(queries)} queries for {len(documents)} documents: give one per pair")
        if not queries:
            return np.zeros(0, dtype=np.float32)
        if self.encoder is not None:
            sides = self.encoder.prefixes(task, query_instruction=instruction)
            return check_finite(cosine_scores(self.encoder, queries, documents, sides))
        assert self.backend is not None
        if self.kind == "cross-encoder":
            if instruction:
                raise ValueError(
                    f"{self.config.model!r} is a cross-encoder: it takes no instruction (it was trained "
                    "on bare pairs); leave instruction out"
                )
            instruction = None
        elif instruction is None:
            instruction = llm_instruction(task)
        pairs = list(zip(queries, documents, strict=True))
        distinct = list(dict.fromkeys(pairs))
        show = wants_progress(show_progress, len(distinct), self.config.show_progress)
        scores = self.backend.score_pairs(
            [q for q, _ in distinct], [d for _, d in distinct], instruction=instruction, show_progress=show
        )
        if len(distinct) != len(pairs):
            where = {pair: row for row, pair in enumerate(distinct)}
            scores = scores[[where[pair] for pair in pairs]]
        return check_finite(scores)  # no NaN leaves the seam, whoever calls it (the server does)

    def __repr__(self) -> str:
        runtime = self.encoder if self.encoder is not None else self.backend
        return f"Reranker(model={self.config.model!r}, kind={self.kind!r}, runtime={runtime!r})"


_shared_lock = threading.RLock()
_shared: dict[RerankerConfig, Reranker] = {}


def release_rerankers() -> None:
    """Forget every shared reranker; called with :func:`qzhou_plugins.encoder.release_all`."""
    with _shared_lock:
        _shared.clear()


at_release(release_rerankers)
