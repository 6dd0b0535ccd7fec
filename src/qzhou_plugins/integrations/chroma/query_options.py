"""What :meth:`QZhouCollection.query` takes besides the query texts: one options object, checked once.

:class:`QueryOptions` extends the search options that every entry point shares
(:class:`~qzhou_plugins.lexical.fusion.SearchOptions`: the mode and the fusion) with what only a
query over a collection has: how many results, Chroma's filters, and the second stage, a rerank of
the best ``rerank_candidates`` by a reranker. The collection, both framework retrievers and the
command line build one, so a bad value gets the same error everywhere, before anything is searched,
and the collection's ``query`` stays a facade that reads the options instead of listing them.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...config import RerankerConfig
from ...encoder import Encoder
from ...instructions import TaskLike, TaskType, check_instruction, resolve_task
from ...lexical.fusion import SearchOptions
from ...rerank.reranker import Reranker
from .query import positive_count

__all__ = ["QueryOptions", "reranker_of"]

RerankerLike = Reranker | Encoder | RerankerConfig | str | os.PathLike[str]
"""What names a reranker: a Reranker, an encoder (its embedding reranker), a configuration, a model."""


@dataclass(frozen=True, kw_only=True)
class QueryOptions(SearchOptions):
    """How a collection is queried: the search (``mode``, ``fusion``, ...), its results and a rerank.

    - ``n_results``: hits returned per query;
    - ``mode``, ``fusion``, ``candidates``, ``rrf_k``, ``alpha``: the search (see
      :class:`~qzhou_plugins.lexical.fusion.SearchOptions`; ``mode="dense"`` by default);
    - ``where``, ``where_document``: Chroma filters (mappings), which hold in every mode;
    - ``rerank_candidates=N``: take the ``max(N, n_results)`` best hits of the search (the fused
      list in hybrid mode), rescore them with ``reranker`` and keep the best ``n_results`` by that
      score, which becomes their ``score`` (its scale in ``Hit.score_scale``);
    - ``reranker``: a :class:`~qzhou_plugins.rerank.Reranker`, a model name (a cross-encoder, an LLM
      reranker such as Qwen3-Reranker or an embedding model; loaded once per process by
      ``Reranker.shared``), a ``RerankerConfig``, or None: the collection's own model (the cosine of
      its instructed query and each hit). It needs ``rerank_candidates``;
    - ``rerank_task``, ``rerank_instruction``: the task of the rerank and an instruction in place
      of the task's (embedding and LLM rerankers; a cross-encoder takes none);
    - ``rerank``: the deprecated former name of ``rerank_candidates``.

    Each value is checked when the options are made; a reranker named by its model is loaded then,
    so a wrong name fails before any search.
    """

    n_results: int = 10
    where: Mapping[str, Any] | None = None
    where_document: Mapping[str, Any] | None = None
    rerank_candidates: int | None = None
    reranker: RerankerLike | None = None
    rerank_task: TaskLike = TaskType.RERANKING
    rerank_instruction: str | None = None
    rerank: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("n_results", positive_count(self.n_results, "n_results"))
        self._set("rerank_candidates", self._candidates())
        self._set("rerank", None)
        for key in ("where", "where_document"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(
                    f"{key} must be a mapping (a Chroma filter) or None, not {type(value).__name__}"
                )
        resolve_task(self.rerank_task)  # a typo fails here, with the close matches
        self._set("rerank_instruction", check_instruction(self.rerank_instruction, what="rerank_instruction"))
        if self.reranker is not None:
            if self.rerank_candidates is None:
                raise ValueError(
                    "reranker= is used only with rerank_candidates=N (how many of the best hits to "
                    "rerank); give both, or leave reranker out"
                )
            self._set("reranker", reranker_of(self.reranker))

    @classmethod
    def of(cls, options: QueryOptions | None, settings: Mapping[str, Any]) -> QueryOptions:
        """``options`` with ``settings`` (keywords) applied: what ``query(texts, options, **settings)``
        was given."""
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise TypeError(
                f"unknown query option(s) {', '.join(unknown)}; the options are {', '.join(known)}"
            )
        if options is None:
            return cls(**settings)
        if not isinstance(options, QueryOptions):
            raise TypeError(f"options must be QueryOptions, not {type(options).__name__}")
        return dataclasses.replace(options, **settings) if settings else options

    @property
    def fetch(self) -> int:
        """Hits the search returns per query: ``n_results``, or the candidates of the rerank."""
        return (
            self.n_results if self.rerank_candidates is None else max(self.rerank_candidates, self.n_results)
        )

    def scorer(self, encoder: Encoder) -> Reranker:
        """The reranker of the rerank: ``reranker``, or the embedding reranker of the collection's
        ``encoder`` (today's rerank: the cosine of its instructed query and each hit)."""
        return self.reranker if isinstance(self.reranker, Reranker) else Reranker.of_encoder(encoder)

    def _candidates(self) -> int | None:
        """``rerank_candidates`` checked, or the deprecated ``rerank`` (with a warning)."""
        if self.rerank is None:
            return (
                None
                if self.rerank_candidates is None
                else positive_count(self.rerank_candidates, "rerank_candidates")
            )
        if self.rerank_candidates is not None:
            raise TypeError("give rerank_candidates only (rerank is its former name), not both")
        warnings.warn(
            "QZhouCollection.query(rerank=N) is deprecated: it is a count of candidates, now called "
            "rerank_candidates=N",
            DeprecationWarning,
            stacklevel=6,  # the caller of query(), past __post_init__, __init__, of() and query()
        )
        return positive_count(self.rerank, "rerank")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: each value is replaced by its checked form once


def reranker_of(value: RerankerLike) -> Reranker:
    """The reranker ``value`` names (see :data:`RerankerLike`); a model is loaded once per process."""
    if isinstance(value, Reranker):
        return value
    if isinstance(value, Encoder):
        return Reranker.of_encoder(value)
    if isinstance(value, RerankerConfig):
        return Reranker.shared(value)
    if isinstance(value, str | os.PathLike):
        model = os.fspath(value)
        if not model.strip():
            raise ValueError("reranker must name a model, not an empty string")
        return Reranker.shared(model=model)
    raise TypeError(
        "reranker must be a Reranker, an Encoder, a RerankerConfig or a model name, not "
        f"{type(value).__name__}"
    )
