"""The evaluations: embed a test set with an encoder, the published side rule for instructions, score.

Retrieval instructs queries only and STS both sentences, as in the published evaluation; the
reranking scores are those of :func:`qzhou_plugins.rerank.score_candidates`, the function the
framework rerankers call, so that what is measured is what users get.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..encoder import Encoder, wants_progress
from ..instructions import TaskLike, TaskType, resolve_task
from ..lexical.analyzers import DEFAULT_ANALYZER
from ..lexical.fusion import (
    DEFAULT_ALPHA,
    DEFAULT_CANDIDATES,
    DEFAULT_FUSION,
    DEFAULT_MODE,
    DEFAULT_RRF_K,
    SearchOptions,
)
from ..lexical.settings import DEFAULT_ENGINE
from ..rerank import score_candidates, unit_rows
from ..rerank.reranker import Reranker
from . import second_stage
from .datasets import (
    EvaluationDataError,
    RerankSample,
    RetrievalDataset,
    SentencePair,
    load_beir,
    read_rerank_samples,
    read_sts_pairs,
)
from .hybrid import fused_run, lexical_run
from .metrics import RETRIEVAL_DEPTH, exact_search, rerank_metrics, retrieval_metrics
from .per_query import query_figures
from .results import RerankResult, RerankStage, RetrievalResult, STSResult

logger = logging.getLogger("qzhou_plugins")


def evaluate_retrieval(
    encoder: Encoder | None,
    data: RetrievalDataset | str | Path,
    *,
    task: TaskLike = TaskType.RETRIEVAL,
    split: str = "test",
    ignore_identical_ids: bool = True,
    show_progress: bool | None = None,
    mode: str = DEFAULT_MODE,
    fusion: str = DEFAULT_FUSION,
    rrf_k: float = DEFAULT_RRF_K,
    alpha: float = DEFAULT_ALPHA,
    candidates: int = DEFAULT_CANDIDATES,
    analyzer: str | None = None,
    lexical_engine: str | None = None,
    reranker: Reranker | Encoder | None = None,
    rerank_depth: int | None = None,
) -> RetrievalResult:
    """Rank the corpus for each judged query as ``mode`` says, and score the ranking.

    ``mode="dense"`` (the default) embeds the corpus (document side) and the queries (query side) and
    searches exactly; ``task`` defaults to retrieval, whose instruction goes on queries only, as in the
    published evaluation (pass a published task name, ``"FiQA2018"``, or an instruction to override
    it). ``mode="lexical"`` ranks by BM25 with a lexical index made as a collection makes its own
    (``analyzer``, ``lexical_engine``), and needs no ``encoder``. ``mode="hybrid"`` fuses the two as
    ``QZhouCollection.query`` does (``fusion``, ``rrf_k``, ``alpha``, ``candidates``); see
    :mod:`.hybrid`.

    With a ``reranker`` (a :class:`~qzhou_plugins.rerank.Reranker` of any kind, or an encoder as its
    embedding reranker), each query's ``rerank_depth`` best (default 100) are reordered by it, with
    ``task``'s instruction where the reranker takes one, and the metrics after go in the result's
    ``rerank`` beside the first stage's (the BEIR protocol; see :mod:`.second_stage`).
    """
    options = SearchOptions(mode, fusion, candidates, rrf_k, alpha)
    if encoder is None and options.mode != "lexical":
        raise TypeError(f"mode {options.mode!r} embeds the texts: give an encoder (None only for 'lexical')")
    depth = second_stage.rerank_depth(reranker, rerank_depth)
    dataset = data if isinstance(data, RetrievalDataset) else load_beir(data, split=split)
    started = time.perf_counter()
    show = wants_progress(
        show_progress, len(dataset.queries), encoder.config.show_progress if encoder else None
    )
    run = _first_stage(encoder, dataset, task, options, ignore_identical_ids, show_progress, show,
                       analyzer=analyzer, lexical_engine=lexical_engine)  # fmt: skip
    described = _description(encoder, task) if encoder is not None else _lexical_only()
    result = RetrievalResult(
        dataset=dataset.name,
        **described,
        seconds=time.perf_counter() - started,
        queries=len(dataset.queries),
        documents=len(dataset.corpus),
        mode=options.mode,
        fusion=options.describe() if options.mode == "hybrid" else None,
        lexical=None if options.mode == "dense" else _lexical_settings(analyzer, lexical_engine),
        **retrieval_metrics(dataset.qrels, run),
        per_query=query_figures(dataset, run),
    )
    if reranker is None or depth is None:
        return result
    return result.model_copy(update={"rerank": _second_stage(reranker, dataset, run, depth, task, show)})


def _first_stage(
    encoder: Encoder | None,
    dataset: RetrievalDataset,
    task: TaskLike,
    options: SearchOptions,
    ignore_identical_ids: bool,
    show_progress: bool | None,
    show: bool,
    **lexical: str | None,
) -> dict[str, dict[str, float]]:
    """The run of ``options.mode``: dense, lexical (``lexical``: engine and analyzer) or both fused."""
    run = {}
    if encoder is not None:
        run = _dense_run(encoder, dataset, task, ignore_identical_ids, show_progress)
    if options.mode == "dense":
        return run
    depth = RETRIEVAL_DEPTH if options.mode == "lexical" else options.candidates
    lexical_hits = lexical_run(dataset, depth, engine=lexical["lexical_engine"], analyzer=lexical["analyzer"],
                               ignore_identical_ids=ignore_identical_ids, show_progress=show)  # fmt: skip
    return lexical_hits if options.mode == "lexical" else fused_run(run, lexical_hits, options)


def _second_stage(
    reranker: Reranker | Encoder,
    dataset: RetrievalDataset,
    run: dict[str, dict[str, float]],
    depth: int,
    task: TaskLike,
    show: bool,
) -> RerankStage:
    """The reranker's reordering of ``run``'s best ``depth`` per query, and its metrics."""
    started = time.perf_counter()
    reranked, pairs = second_stage.reranked_run(reranker, dataset, run, depth, task=task, show_progress=show)
    return RerankStage(
        **second_stage.describe_reranker(reranker, task),
        depth=depth,
        pairs=pairs,
        seconds=time.perf_counter() - started,
        metrics=_in_order(retrieval_metrics(dataset.qrels, reranked)),
        per_query=query_figures(dataset, reranked),
    )


def _in_order(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics in the order the first stage's are listed (and printed) in."""
    return {name: metrics[name] for name in RetrievalResult.metric_names}


def _dense_run(
    encoder: Encoder, dataset: RetrievalDataset, task: TaskLike, ignore_identical_ids: bool, show: bool | None
) -> dict[str, dict[str, float]]:
    """Every judged query's nearest documents by exact cosine search."""
    document_ids = list(dataset.corpus)
    query_ids = list(dataset.queries)
    logger.info(
        "Embedding %d documents and %d queries of %s", len(document_ids), len(query_ids), dataset.name
    )
    document_vectors = encoder.encode_documents(
        [dataset.corpus[i] for i in document_ids], task, show_progress=show
    )
    query_vectors = encoder.encode_queries([dataset.queries[i] for i in query_ids], task, show_progress=show)
    return exact_search(
        query_vectors, document_vectors, query_ids, document_ids, ignore_identical_ids=ignore_identical_ids
    )


def _lexical_settings(analyzer: str | None, engine: str | None) -> str:
    """``BM25 (fts5 engine, english analyzer)``: what made the lexical side."""
    return f"BM25 ({engine or DEFAULT_ENGINE} engine, {analyzer or DEFAULT_ANALYZER} analyzer)"


def _lexical_only() -> dict[str, str]:
    """The description of a run that used no model (``mode="lexical"``)."""
    return {"model": "none", "task": "none", "query_prefix": "", "document_prefix": ""}


def evaluate_sts(
    encoder: Encoder,
    data: Sequence[SentencePair] | str | Path,
    *,
    task: TaskLike = TaskType.STS,
    name: str | None = None,
    show_progress: bool | None = None,
) -> STSResult:
    """Spearman (and Pearson) correlation between the pairs' cosine similarity and the gold scores.

    The first sentence is embedded on the query side and the second on the document side; the STS
    task instructs both sides alike, as the published evaluation did.
    """
    from scipy.stats import pearsonr, spearmanr

    if isinstance(data, (str, Path)):
        pairs = read_sts_pairs(data)
        name = name or Path(data).stem
    else:
        pairs = list(data)
        if len(pairs) < 2:
            raise EvaluationDataError(f"{len(pairs)} pairs given; a correlation needs at least 2")
    gold = np.array([pair.score for pair in pairs], dtype=np.float64)
    if np.all(gold == gold[0]):
        raise EvaluationDataError("every gold score is the same: a correlation is undefined")
    started = time.perf_counter()
    first = encoder.encode_queries([pair.sentence1 for pair in pairs], task, show_progress=show_progress)
    second = encoder.encode_documents([pair.sentence2 for pair in pairs], task, show_progress=show_progress)
    cosine = np.sum(unit_rows(first) * unit_rows(second), axis=1, dtype=np.float64)
    return STSResult(
        dataset=name or "sts",
        **_description(encoder, task),
        seconds=time.perf_counter() - started,
        spearman=float(spearmanr(gold, cosine).statistic),
        pearson=float(pearsonr(gold, cosine).statistic),
        pairs=len(pairs),
    )


def evaluate_reranking(
    scorer: Encoder | Reranker,
    data: Sequence[RerankSample] | str | Path,
    *,
    task: TaskLike = TaskType.RERANKING,
    name: str | None = None,
    show_progress: bool | None = None,
) -> RerankResult:
    """MAP and MRR@10 of each query's candidates ordered by ``scorer``'s score.

    ``scorer`` is an encoder (its embedding reranker: the cosine of the instructed query and each
    candidate) or any :class:`~qzhou_plugins.rerank.Reranker` (a cross-encoder, an LLM reranker),
    which then needs no embedder. The scores come from :func:`qzhou_plugins.rerank.score_candidates`,
    the very function the framework rerankers call, so this measures what users get. A tie between
    a positive and a negative candidate counts against the model (the negative is ranked first).
    """
    if isinstance(data, (str, Path)):
        samples = read_rerank_samples(data)
        name = name or Path(data).stem
    else:
        samples = list(data)
    started = time.perf_counter()
    show = wants_progress(show_progress, len(samples), scorer.config.show_progress)
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for number, sample in enumerate(tqdm(samples, desc="Reranking", unit="query", disable=not show)):
        if sample.positive:
            qrels[str(number)], run[str(number)] = _judged_scores(scorer, sample, task)
    skipped = len(samples) - len(qrels)
    if skipped:
        logger.warning(
            "%d of %d reranking samples have no positive candidate and are not scored", skipped, len(samples)
        )
    if not qrels:
        raise EvaluationDataError("no sample has a positive candidate: MAP and MRR are undefined")
    return RerankResult(
        dataset=name or "rerank",
        **_scorer_description(scorer, task),
        seconds=time.perf_counter() - started,
        **rerank_metrics(qrels, run),
        queries=len(qrels),
        candidates=sum(len(judged) for judged in qrels.values()),
        skipped_queries=skipped,
    )


def _judged_scores(
    scorer: Encoder | Reranker, sample: RerankSample, task: TaskLike
) -> tuple[dict[str, int], dict[str, float]]:
    """One sample as trec_eval judgements and run: candidate id -> relevance, candidate id -> score."""
    texts = [*sample.positive, *sample.negative]
    scores = score_candidates(scorer, sample.query, texts, task=task)
    # trec_eval orders ties by descending id: "n" ids after "p" ids would favour positives,
    # so negatives get the larger prefix "q".
    ids = [f"p{i}" for i in range(len(sample.positive))] + [f"q{i}" for i in range(len(sample.negative))]
    judged = {doc: int(doc.startswith("p")) for doc in ids}
    return judged, {doc: float(score) for doc, score in zip(ids, scores, strict=True)}


def _scorer_description(scorer: Encoder | Reranker, task: TaskLike) -> dict[str, str | None]:
    """What a reranking result records of its scorer: its model, kind and scale, the task whose
    instruction it was given (``none`` for a cross-encoder) and the prefixes an embedding reranker put
    before each side (none for a cross-encoder or an LLM reranker, whose template holds the pair)."""
    encoder = scorer if isinstance(scorer, Encoder) else scorer.encoder
    query_prefix, document_prefix = encoder.prefixes(task) if encoder is not None else ("", "")
    return {
        **second_stage.describe_reranker(scorer, task),
        "query_prefix": query_prefix,
        "document_prefix": document_prefix,
        "runtime": scorer.facts.runtime,
    }


def _description(encoder: Encoder, task: TaskLike) -> dict[str, str | None]:
    query_prefix, document_prefix = encoder.prefixes(task)
    return {
        "model": encoder.model_name,
        "task": resolve_task(task).name,
        "query_prefix": query_prefix,
        "document_prefix": document_prefix,
        "runtime": encoder.facts.runtime,
    }
