"""Quality on local files: retrieval (BEIR folders), STS pairs and reranking candidate lists.

An embedder is chosen by its published numbers and kept when the user can reproduce them on their own
machine and data. So the metrics here are the ones the MTEB leaderboard reports, computed the way MTEB
computes them: exact search by cosine, ``trec_eval`` measures through ``pytrec_eval`` (what MTEB uses)
rather than our own arithmetic, Spearman from scipy, and the published side rule for instructions
(retrieval instructs queries only, STS instructs both sentences). The results carry MTEB's key names
(``ndcg_at_10``, ``recall_at_100``, ``mrr_at_10``, ``spearman``, ``map``) so that they can be compared
with leaderboard files directly.

The package follows the data: ``datasets`` reads and checks the files, ``runs`` embeds them and
searches, ``second_stage`` reranks a retrieval run's best (the BEIR protocol for rerankers),
``metrics`` scores the runs (``per_query`` keeps each query's figures), ``results`` is what comes
back. It is part of the core: it
needs numpy, scipy and ``pytrec_eval`` (the ``cli`` extra), and no framework.
"""

from __future__ import annotations

import warnings
from typing import Any

from .datasets import (
    EvaluationDataError,
    RerankSample,
    RetrievalDataset,
    SentencePair,
    load_beir,
    read_qrels,
    read_rerank_samples,
    read_sts_pairs,
)
from .metrics import RETRIEVAL_DEPTH, exact_search, query_metrics, rerank_metrics, retrieval_metrics
from .results import (
    EvaluationResult,
    FirstResult,
    QueryFigures,
    RerankResult,
    RerankStage,
    RetrievalResult,
    STSResult,
)
from .runs import evaluate_reranking, evaluate_retrieval, evaluate_sts
from .second_stage import DEFAULT_RERANK_DEPTH

__all__ = [
    "DEFAULT_RERANK_DEPTH",
    "RETRIEVAL_DEPTH",
    "EvaluationDataError",
    "EvaluationResult",
    "FirstResult",
    "QueryFigures",
    "RerankResult",
    "RerankSample",
    "RerankStage",
    "RetrievalDataset",
    "RetrievalResult",
    "STSResult",
    "SentencePair",
    "evaluate_reranking",
    "evaluate_retrieval",
    "evaluate_sts",
    "exact_search",
    "load_beir",
    "query_metrics",
    "read_qrels",
    "read_rerank_samples",
    "read_sts_pairs",
    "rerank_metrics",
    "retrieval_metrics",
]


def __getattr__(name: str) -> Any:
    """``iter_json_objects`` moved to :mod:`qzhou_plugins.jsonlines` (it is not evaluation's own)."""
    if name == "iter_json_objects":
        warnings.warn(
            "qzhou_plugins.evaluation.iter_json_objects moved to qzhou_plugins.jsonlines.iter_json_objects",
            DeprecationWarning,
            stacklevel=2,
        )
        from ..jsonlines import iter_json_objects

        return iter_json_objects
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
