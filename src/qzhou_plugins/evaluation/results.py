"""What an evaluation reports: its metrics under MTEB's key names, and what produced them.

The key names (``ndcg_at_10``, ``recall_at_100``, ``mrr_at_10``, ``spearman``, ``map``) are the
leaderboard's, so that a result can be compared with leaderboard files directly; the prefixes say
which instructions produced it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field


class EvaluationResult(BaseModel):
    """What every evaluation reports besides its metrics: what was measured, with what, how fast.

    ``query_prefix`` and ``document_prefix`` are the exact texts the model put before each side, so
    that a result says which instructions produced it (empty for a model trained without any).
    """

    model_config = ConfigDict(frozen=True)

    evaluation: Literal["retrieval", "sts", "rerank"]
    dataset: str
    model: str
    task: str
    query_prefix: str
    document_prefix: str
    seconds: float
    runtime: str | None = None
    """Where and in what precision the model computed (``cpu, bfloat16 (autocast over float32
    weights)``); None for a served model or a run with none."""

    metric_names: ClassVar[tuple[str, ...]] = ()
    """The metric fields, under MTEB's key names."""
    main_metric: ClassVar[str] = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def main_score(self) -> float:
        """The leaderboard's headline metric for this kind of evaluation."""
        return float(getattr(self, self.main_metric))

    def metrics(self) -> dict[str, float]:
        """The metrics alone, under MTEB's key names."""
        return {name: float(getattr(self, name)) for name in self.metric_names}

    def to_json(self, *, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)


class FirstResult(BaseModel):
    """One of a query's first results: its id, its judged relevance (0: not judged relevant) and the
    start of its text, so that a bad query can be read without the corpus at hand."""

    model_config = ConfigDict(frozen=True)

    id: str
    relevance: int
    excerpt: str


class QueryFigures(BaseModel):
    """One judged query's figures, so that two runs can be compared query by query (which queries a
    hybrid run or a reranker helped or hurt) and the worst ones read with their first results."""

    model_config = ConfigDict(frozen=True)

    query: str
    ndcg_at_10: float
    recall_at_100: float
    first: list[FirstResult]


class RerankStage(BaseModel):
    """A reranker's second stage over a retrieval run: what reranked, how deep, and the metrics after.

    The BEIR protocol for rerankers: each query's ``depth`` best first-stage documents reordered by
    the reranker (the rest after them, in their first-stage order), scored with the same measures as
    the first stage, whose figures stay in the :class:`RetrievalResult` around this one. ``kind`` and
    ``score_scale`` are the reranker's (:attr:`Reranker.facts`); ``task`` is the task whose
    instruction it was given (``"none"`` for a cross-encoder, which takes none); ``pairs`` is how
    many (query, document) pairs it scored, in ``seconds``.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    kind: str
    score_scale: str
    task: str
    depth: int
    pairs: int
    seconds: float
    metrics: dict[str, float]
    """The first stage's metric names (``ndcg_at_10``, ``recall_at_100``, ...) after reranking."""
    per_query: dict[str, QueryFigures] = Field(default_factory=dict)
    """Query id -> its figures after reranking (empty in results written before they were kept)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def main_score(self) -> float:
        """nDCG@10 after reranking."""
        return float(self.metrics[RetrievalResult.main_metric])


class RetrievalResult(EvaluationResult):
    """Retrieval quality averaged over the judged queries (MTEB's main score: nDCG@10).

    ``mode`` says how the documents were ranked (``dense``, ``lexical`` or ``hybrid``), ``lexical``
    what made the lexical side and ``fusion`` how the two were fused (None where they took no part).
    A lexical run used no model: its ``model`` and ``task`` are ``"none"``. The metrics,
    ``main_score`` and ``seconds`` are the first stage's; ``rerank`` holds those after a reranker
    reordered its best (None when no reranker took part).
    """

    evaluation: Literal["retrieval"] = "retrieval"
    mode: Literal["dense", "lexical", "hybrid"] = "dense"
    lexical: str | None = None
    fusion: str | None = None
    ndcg_at_10: float
    mrr_at_10: float
    map_at_1000: float
    recall_at_10: float
    recall_at_100: float
    queries: int
    documents: int
    rerank: RerankStage | None = None
    per_query: dict[str, QueryFigures] = Field(default_factory=dict)
    """Query id -> its figures in this run (empty in results written before they were kept)."""

    metric_names = ("ndcg_at_10", "mrr_at_10", "map_at_1000", "recall_at_10", "recall_at_100")
    main_metric = "ndcg_at_10"


class STSResult(EvaluationResult):
    """Correlation of cosine similarity with the gold scores (MTEB's main score: Spearman)."""

    evaluation: Literal["sts"] = "sts"
    spearman: float
    pearson: float
    pairs: int

    metric_names = ("spearman", "pearson")
    main_metric = "spearman"


class RerankResult(EvaluationResult):
    """Ranking quality of candidate lists (MTEB's main score: MAP).

    Samples without a positive candidate have no defined precision; they are counted in
    ``skipped_queries`` rather than scored. ``kind`` and ``score_scale`` are the scorer's: an
    embedding model's cosine, or a cross-encoder's or LLM reranker's (``task`` is then ``"none"``
    for a cross-encoder, which takes no instruction).
    """

    evaluation: Literal["rerank"] = "rerank"
    kind: str = "embedding"
    score_scale: str = "cosine"
    map: float
    mrr_at_10: float
    queries: int
    candidates: int
    skipped_queries: int

    metric_names = ("map", "mrr_at_10")
    main_metric = "map"
