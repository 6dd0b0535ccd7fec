"""Quality on local files: retrieval (BEIR folders), STS pairs and reranking candidate lists.

An embedder is chosen by its published numbers and kept when the user can reproduce them on their own
machine and data. So the metrics here are the ones the MTEB leaderboard reports, computed the way MTEB
computes them: exact search by cosine, ``trec_eval`` measures through ``pytrec_eval`` (what MTEB uses)
rather than our own arithmetic, Spearman from scipy, and the published side rule for instructions
(retrieval instructs queries only, STS instructs both sentences). The results carry MTEB's key names
(``ndcg_at_10``, ``recall_at_100``, ``mrr_at_10``, ``spearman``, ``map``) so that they can be compared
with leaderboard files directly.

This module is part of the core: it needs numpy, scipy and ``pytrec_eval`` (the ``cli`` extra), and no
framework.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, computed_field
from tqdm.auto import tqdm

from .encoder import Encoder
from .instructions import TaskLike, TaskType, resolve_task

logger = logging.getLogger("qzhou_plugins")

RETRIEVAL_DEPTH = 1000
"""Documents kept per query in a retrieval run, as MTEB keeps."""

_QUERY_BLOCK = 256
"""Queries scored against the whole corpus at once: bounds the score matrix to 256 x corpus floats."""


class EvaluationDataError(ValueError):
    """An evaluation file is missing or malformed; the message names the file and the line."""


# -- data ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalDataset:
    """A retrieval test set in memory: documents, queries and relevance judgements, all keyed by id.

    Only queries with judgements are evaluated (BEIR's ``queries.jsonl`` often holds every split's
    queries while ``qrels`` holds one split's).
    """

    name: str
    corpus: dict[str, str]
    """Document id -> the text that is embedded (BEIR: ``title + " " + text``, stripped)."""
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    """Query id -> {document id: relevance}; relevance > 0 means relevant (trec_eval's rule)."""
    blank_documents: tuple[str, ...] = field(default=())
    """Ids of documents with no text: they cannot be embedded, so they are never retrieved."""


class SentencePair(NamedTuple):
    sentence1: str
    sentence2: str
    score: float


class RerankSample(NamedTuple):
    """One query with its candidate texts, split by gold relevance (the MTEB reranking layout)."""

    query: str
    positive: list[str]
    negative: list[str]


def load_beir(folder: str | Path, *, split: str = "test") -> RetrievalDataset:
    """Read a BEIR-format folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels.tsv``.

    The judgements are read from ``qrels.tsv`` or, in BEIR's own layout, ``qrels/<split>.tsv``.
    Documents are embedded as BEIR and MTEB embed them: title, a space, text, stripped.
    """
    root = Path(folder)
    if not root.is_dir():
        raise EvaluationDataError(f"{root} is not a folder (expected corpus.jsonl, queries.jsonl, qrels.tsv)")
    qrels_path = root / "qrels.tsv"
    if not qrels_path.is_file():
        qrels_path = root / "qrels" / f"{split}.tsv"
    for needed in (root / "corpus.jsonl", root / "queries.jsonl", qrels_path):
        if not needed.is_file():
            raise EvaluationDataError(
                f"{needed} is missing: a BEIR folder holds corpus.jsonl, queries.jsonl and qrels.tsv "
                f"(or qrels/{split}.tsv)"
            )
    corpus: dict[str, str] = {}
    blank: list[str] = []
    for line_number, record in _read_jsonl(root / "corpus.jsonl"):
        doc_id = _record_id(record, root / "corpus.jsonl", line_number)
        if doc_id in corpus or doc_id in blank:
            raise EvaluationDataError(
                f"{root / 'corpus.jsonl'}:{line_number}: duplicate document id {doc_id!r}"
            )
        text = f"{_text_field(record, 'title')} {_text_field(record, 'text')}".strip()
        if text:
            corpus[doc_id] = text
        else:
            blank.append(doc_id)
    if not corpus:
        raise EvaluationDataError(f"{root / 'corpus.jsonl'} has no documents with text")
    if blank:
        logger.warning(
            "%d documents of %s have no text and are left out of the search", len(blank), root.name
        )

    all_queries: dict[str, str] = {}
    for line_number, record in _read_jsonl(root / "queries.jsonl"):
        query_id = _record_id(record, root / "queries.jsonl", line_number)
        if query_id in all_queries:
            raise EvaluationDataError(
                f"{root / 'queries.jsonl'}:{line_number}: duplicate query id {query_id!r}"
            )
        all_queries[query_id] = _text_field(record, "text").strip()

    qrels = read_qrels(qrels_path)
    missing = [query_id for query_id in qrels if query_id not in all_queries]
    if missing:
        raise EvaluationDataError(
            f"{qrels_path} judges {len(missing)} queries that are not in queries.jsonl: {_some(missing)}"
        )
    empty = [query_id for query_id in qrels if not all_queries[query_id]]
    if empty:
        raise EvaluationDataError(f"{root / 'queries.jsonl'}: queries with no text: {_some(empty)}")
    queries = {query_id: all_queries[query_id] for query_id in all_queries if query_id in qrels}
    return RetrievalDataset(
        name=root.name, corpus=corpus, queries=queries, qrels=qrels, blank_documents=tuple(blank)
    )


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Judgements from a TSV file: ``query-id, corpus-id, score`` (BEIR, header optional) or the four
    columns of a TREC qrels file (``query-id, iteration, corpus-id, score``)."""
    qrels: dict[str, dict[str, int]] = {}
    with Path(path).open(encoding="utf-8-sig", newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) == 1 and " " in row[0]:
                row = row[0].split()
            if len(row) not in (3, 4):
                raise EvaluationDataError(
                    f"{path}:{line_number}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                    f"found {len(row)}"
                )
            query_id, doc_id, relevance = (row[0], row[-2], row[-1])
            try:
                value = int(float(relevance))
            except ValueError:
                if line_number == 1:
                    continue  # the header
                raise EvaluationDataError(
                    f"{path}:{line_number}: relevance {relevance!r} is not a number"
                ) from None
            qrels.setdefault(query_id.strip(), {})[doc_id.strip()] = value
    if not qrels:
        raise EvaluationDataError(f"{path} has no judgements")
    return qrels


def read_sts_pairs(path: str | Path) -> list[SentencePair]:
    """Pairs of a ``sentence1<TAB>sentence2<TAB>score`` file (header optional, no quoting).

    STS files contain unbalanced quotes, so lines are split on tabs only, never parsed as CSV.
    """
    source = Path(path)
    if not source.is_file():
        raise EvaluationDataError(
            f"{source} is not a file (expected sentence1<TAB>sentence2<TAB>score lines)"
        )
    pairs: list[SentencePair] = []
    for line_number, line in enumerate(source.read_text("utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 3:
            raise EvaluationDataError(
                f"{source}:{line_number}: expected 3 tab-separated columns (sentence1, sentence2, score), "
                f"found {len(columns)}"
            )
        first, second, score = columns
        try:
            value = float(score)
        except ValueError:
            if line_number == 1:
                continue  # the header
            raise EvaluationDataError(f"{source}:{line_number}: score {score!r} is not a number") from None
        if not math.isfinite(value):
            raise EvaluationDataError(f"{source}:{line_number}: score {score!r} is not a finite number")
        if not first.strip() or not second.strip():
            raise EvaluationDataError(f"{source}:{line_number}: a sentence is empty")
        pairs.append(SentencePair(first.strip(), second.strip(), value))
    if len(pairs) < 2:
        raise EvaluationDataError(f"{source} has {len(pairs)} pairs; a correlation needs at least 2")
    return pairs


def read_rerank_samples(path: str | Path) -> list[RerankSample]:
    """Samples of a reranking JSONL file.

    One JSON object per line: ``{"query": "...", "positive": ["..."], "negative": ["..."]}`` (the layout
    of MTEB's reranking sets). ``positive`` holds the relevant candidates, ``negative`` the others;
    either may be empty, every text must be a non-blank string.
    """
    source = Path(path)
    if not source.is_file():
        raise EvaluationDataError(
            f"{source} is not a file (expected JSON lines with query, positive, negative)"
        )
    samples: list[RerankSample] = []
    for line_number, record in _read_jsonl(source):
        where = f"{source}:{line_number}"
        query = record.get("query")
        if not isinstance(query, str) or not query.strip():
            raise EvaluationDataError(f"{where}: 'query' must be a non-empty string")
        lists: dict[str, list[str]] = {}
        for side in ("positive", "negative"):
            texts = record.get(side, [])
            if isinstance(texts, str) or not isinstance(texts, list):
                raise EvaluationDataError(f"{where}: {side!r} must be a list of strings")
            bad = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
            if bad:
                raise EvaluationDataError(f"{where}: {side}[{bad[0]}] is not a non-empty string")
            lists[side] = texts
        if not lists["positive"] and not lists["negative"]:
            raise EvaluationDataError(f"{where}: no candidates (both 'positive' and 'negative' are empty)")
        samples.append(RerankSample(query, lists["positive"], lists["negative"]))
    if not samples:
        raise EvaluationDataError(f"{source} has no samples")
    return samples


def iter_json_objects(
    lines: Iterable[str], source: str | Path, *, expected: str = "a JSON object"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines text, naming the bad line."""
    for line_number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise EvaluationDataError(f"{source}:{line_number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise EvaluationDataError(f"{source}:{line_number}: expected {expected}")
        yield line_number, record


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig") as handle:
        yield from iter_json_objects(handle, path)


def _record_id(record: dict[str, Any], path: Path, line_number: int) -> str:
    value = record.get("_id")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise EvaluationDataError(f"{path}:{line_number}: the record has no '_id'")
    return str(value)


def _text_field(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    return value if isinstance(value, str) else ""


def _some(ids: Sequence[str], shown: int = 5) -> str:
    head = ", ".join(repr(i) for i in ids[:shown])
    return head + (f", ... ({len(ids)} in all)" if len(ids) > shown else "")


# -- results ------------------------------------------------------------------------------------------


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


class RetrievalResult(EvaluationResult):
    """Retrieval quality averaged over the judged queries (MTEB's main score: nDCG@10)."""

    evaluation: Literal["retrieval"] = "retrieval"
    ndcg_at_10: float
    mrr_at_10: float
    map_at_1000: float
    recall_at_10: float
    recall_at_100: float
    queries: int
    documents: int

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
    ``skipped_queries`` rather than scored.
    """

    evaluation: Literal["rerank"] = "rerank"
    map: float
    mrr_at_10: float
    queries: int
    candidates: int
    skipped_queries: int

    metric_names = ("map", "mrr_at_10")
    main_metric = "map"


# -- metrics ------------------------------------------------------------------------------------------


def retrieval_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Mean nDCG@10, MRR@10, MAP@1000, recall@10 and recall@100 of ``run`` over the judged queries.

    Computed by trec_eval (``pytrec_eval``). A judged query absent from the run scores 0 on every
    metric. trec_eval breaks score ties by document id (descending), as in MTEB.
    """
    import pytrec_eval

    judged = {query_id: dict(judgements) for query_id, judgements in qrels.items()}
    scored = {query_id: {d: float(s) for d, s in run.get(query_id, {}).items()} for query_id in judged}
    measures = {"ndcg_cut.10", "recall.10", "recall.100", "map_cut.1000", "recip_rank"}
    per_query = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(scored)
    names = {
        "ndcg_at_10": "ndcg_cut_10",
        "map_at_1000": "map_cut_1000",
        "recall_at_10": "recall_10",
        "recall_at_100": "recall_100",
    }
    totals = dict.fromkeys([*names, "mrr_at_10"], 0.0)
    for values in per_query.values():
        for ours, theirs in names.items():
            totals[ours] += values[theirs]
        totals["mrr_at_10"] += _reciprocal_rank_at_10(values["recip_rank"])
    return {name: total / len(judged) for name, total in totals.items()}


def _reciprocal_rank_at_10(reciprocal_rank: float) -> float:
    """MRR@10 from trec_eval's uncut reciprocal rank: a first hit below rank 10 counts 0.

    The same as ``recip_rank`` on a run cut to 10, with trec_eval's own tie order.
    """
    return reciprocal_rank if reciprocal_rank >= 0.1 - 1e-12 else 0.0


def exact_search(
    query_vectors: np.ndarray,
    document_vectors: np.ndarray,
    query_ids: Sequence[str],
    document_ids: Sequence[str],
    *,
    depth: int = RETRIEVAL_DEPTH,
    ignore_identical_ids: bool = True,
) -> dict[str, dict[str, float]]:
    """The ``depth`` most similar documents of each query by cosine, as a trec_eval run.

    ``ignore_identical_ids`` drops a document whose id is the query's own id, as MTEB does: in sets
    where queries are also documents (Quora, ArguAna) the query would otherwise retrieve itself.
    """
    queries = _unit_rows(query_vectors)
    documents = _unit_rows(document_vectors)
    keep = min(depth, len(document_ids))
    position = {doc_id: i for i, doc_id in enumerate(document_ids)} if ignore_identical_ids else {}
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(query_ids), _QUERY_BLOCK):
        block_ids = query_ids[start : start + _QUERY_BLOCK]
        scores = queries[start : start + len(block_ids)] @ documents.T
        for row, query_id in enumerate(block_ids):
            if query_id in position:
                scores[row, position[query_id]] = -np.inf
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        for row, query_id in enumerate(block_ids):
            hits = top[row][np.argsort(-scores[row, top[row]], kind="stable")]
            run[query_id] = {
                document_ids[d]: float(scores[row, d]) for d in hits if np.isfinite(scores[row, d])
            }
    return run


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, so that a dot product is the cosine even for unnormalised encoders."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)


# -- evaluations --------------------------------------------------------------------------------------


def evaluate_retrieval(
    encoder: Encoder,
    data: RetrievalDataset | str | Path,
    *,
    task: TaskLike = TaskType.RETRIEVAL,
    split: str = "test",
    ignore_identical_ids: bool = True,
    show_progress: bool | None = None,
) -> RetrievalResult:
    """Embed the corpus (document side) and the judged queries (query side), search exactly, score.

    ``task`` defaults to retrieval, whose instruction goes on queries only, as in the published
    evaluation; pass a published task name (``"FiQA2018"``) or a custom instruction to override it.
    """
    dataset = data if isinstance(data, RetrievalDataset) else load_beir(data, split=split)
    started = time.perf_counter()
    document_ids = list(dataset.corpus)
    query_ids = list(dataset.queries)
    logger.info(
        "Embedding %d documents and %d queries of %s", len(document_ids), len(query_ids), dataset.name
    )
    document_vectors = encoder.encode_documents(
        [dataset.corpus[i] for i in document_ids], task, show_progress=show_progress
    )
    query_vectors = encoder.encode_queries(
        [dataset.queries[i] for i in query_ids], task, show_progress=show_progress
    )
    run = exact_search(
        query_vectors, document_vectors, query_ids, document_ids, ignore_identical_ids=ignore_identical_ids
    )
    metrics = retrieval_metrics(dataset.qrels, run)
    return RetrievalResult(
        dataset=dataset.name,
        **_description(encoder, task),
        seconds=time.perf_counter() - started,
        queries=len(query_ids),
        documents=len(document_ids),
        **metrics,
    )


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
    cosine = np.sum(_unit_rows(first) * _unit_rows(second), axis=1, dtype=np.float64)
    return STSResult(
        dataset=name or "sts",
        **_description(encoder, task),
        seconds=time.perf_counter() - started,
        spearman=float(spearmanr(gold, cosine).statistic),
        pearson=float(pearsonr(gold, cosine).statistic),
        pairs=len(pairs),
    )


def evaluate_reranking(
    encoder: Encoder,
    data: Sequence[RerankSample] | str | Path,
    *,
    task: TaskLike = TaskType.RERANKING,
    name: str | None = None,
    show_progress: bool | None = None,
) -> RerankResult:
    """MAP and MRR@10 of each query's candidates ordered by the shared model's reranking score.

    The scores come from :func:`qzhou_plugins.rerank.score_candidates`, the very function the
    framework rerankers call, so this measures what users get. A tie between a positive and a
    negative candidate counts against the model (the negative is ranked first).
    """
    from .rerank import score_candidates

    if isinstance(data, (str, Path)):
        samples = read_rerank_samples(data)
        name = name or Path(data).stem
    else:
        samples = list(data)
    started = time.perf_counter()
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    skipped = 0
    candidates = 0
    show = show_progress if show_progress is not None else len(samples) >= 100
    for number, sample in enumerate(tqdm(samples, desc="Reranking", unit="query", disable=not show)):
        if not sample.positive:
            skipped += 1
            continue
        texts = [*sample.positive, *sample.negative]
        scores = score_candidates(encoder, sample.query, texts, task=task)
        # trec_eval orders ties by descending id: "n" ids after "p" ids would favour positives,
        # so negatives get the larger prefix "q".
        ids = [f"p{i}" for i in range(len(sample.positive))] + [f"q{i}" for i in range(len(sample.negative))]
        key = str(number)
        qrels[key] = {doc: int(doc.startswith("p")) for doc in ids}
        run[key] = {doc: float(score) for doc, score in zip(ids, scores, strict=True)}
        candidates += len(texts)
    if skipped:
        logger.warning(
            "%d of %d reranking samples have no positive candidate and are not scored", skipped, len(samples)
        )
    if not qrels:
        raise EvaluationDataError("no sample has a positive candidate: MAP and MRR are undefined")
    map_score, mrr = _rerank_metrics(qrels, run)
    return RerankResult(
        dataset=name or "rerank",
        **_description(encoder, task),
        seconds=time.perf_counter() - started,
        map=map_score,
        mrr_at_10=mrr,
        queries=len(qrels),
        candidates=candidates,
        skipped_queries=skipped,
    )


def _rerank_metrics(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> tuple[float, float]:
    import pytrec_eval

    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"map", "recip_rank"}).evaluate(run)
    total_map = sum(values["map"] for values in per_query.values())
    total_mrr = sum(_reciprocal_rank_at_10(values["recip_rank"]) for values in per_query.values())
    return total_map / len(qrels), total_mrr / len(qrels)


def _description(encoder: Encoder, task: TaskLike) -> dict[str, str]:
    query_prefix, document_prefix = encoder.prefixes(task)
    return {
        "model": encoder.model_name,
        "task": resolve_task(task).name,
        "query_prefix": query_prefix,
        "document_prefix": document_prefix,
    }
