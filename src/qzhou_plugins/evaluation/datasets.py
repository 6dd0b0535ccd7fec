"""The test sets on disk: BEIR retrieval folders, STS pair files and reranking JSON lines.

Everything is read and checked before a model is loaded (a typo on line 900 should not cost the
minutes a 7B model takes to load), and every problem is an :class:`EvaluationDataError` naming the
file and the line.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..documents import join_text_fields
from ..jsonlines import JSONLinesError, read_json_objects

logger = logging.getLogger("qzhou_plugins")


class EvaluationDataError(ValueError):
    """An evaluation file is missing or malformed; the message names the file and the line."""


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
    corpus, blank = _read_corpus(root / "corpus.jsonl")
    all_queries = _read_queries(root / "queries.jsonl")
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


def _read_corpus(path: Path) -> tuple[dict[str, str], list[str]]:
    """The documents with text, by id, and the ids of those without (warned about, never searched)."""
    corpus: dict[str, str] = {}
    blank: list[str] = []
    for line_number, record in _read_jsonl(path):
        doc_id = _record_id(record, path, line_number)
        if doc_id in corpus or doc_id in blank:
            raise EvaluationDataError(f"{path}:{line_number}: duplicate document id {doc_id!r}")
        text = join_text_fields([_text_field(record, "title"), _text_field(record, "text")])
        if text:
            corpus[doc_id] = text
        else:
            blank.append(doc_id)
    if not corpus:
        raise EvaluationDataError(f"{path} has no documents with text")
    if blank:
        logger.warning(
            "%d documents of %s have no text and are left out of the search", len(blank), path.parent.name
        )
    return corpus, blank


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for line_number, record in _read_jsonl(path):
        query_id = _record_id(record, path, line_number)
        if query_id in queries:
            raise EvaluationDataError(f"{path}:{line_number}: duplicate query id {query_id!r}")
        queries[query_id] = _text_field(record, "text").strip()
    return queries


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
    samples = [_rerank_sample(record, f"{source}:{line}") for line, record in _read_jsonl(source)]
    if not samples:
        raise EvaluationDataError(f"{source} has no samples")
    return samples


def _rerank_sample(record: dict[str, Any], where: str) -> RerankSample:
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
    return RerankSample(query, lists["positive"], lists["negative"])


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The shared JSON-lines reader, its errors raised as evaluation data errors."""
    try:
        yield from read_json_objects(path)
    except JSONLinesError as error:
        raise EvaluationDataError(str(error)) from None


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
