"""Evaluation: metric code against hand-computed values, data readers against bad files, and the
whole pipeline against an independent sentence-transformers computation on the same data."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import document_text, read_jsonl, read_sts, shared_data
from qzhou_plugins import Encoder, jsonlines
from qzhou_plugins.evaluation import (
    EvaluationDataError,
    RerankSample,
    RetrievalDataset,
    SentencePair,
    evaluate_reranking,
    evaluate_retrieval,
    evaluate_sts,
    exact_search,
    load_beir,
    read_qrels,
    read_rerank_samples,
    read_sts_pairs,
    retrieval_metrics,
)
from qzhou_plugins.instructions import QZHOU_INSTRUCTION_FORMAT, TASK_TYPE_DEFAULTS, TaskType
from qzhou_plugins.rerank import score_candidates


@pytest.fixture(scope="module")
def minilm(minilm_path: str) -> Encoder:
    return Encoder.shared(model=minilm_path)


@pytest.fixture(scope="module")
def reference(minilm_path: str):  # type: ignore[no-untyped-def]
    """The independent computation: sentence-transformers on the same weights, loaded once."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


# -- metrics on hand-checked runs -----------------------------------------------------------------------


def test_retrieval_metrics_match_hand_computation() -> None:
    qrels = {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 1}, "q3": {"d9": 1}}
    filler = {f"x{i:02d}": 0.9 - i / 100 for i in range(11)}  # 11 misses ahead of d3 -> rank 12
    run = {
        "q1": {"d1": 0.9, "x": 0.8, "d2": 0.7},  # hits at ranks 1 and 3
        "q2": {**filler, "d3": 0.5},
        # q3 is judged but has no run: it must count as 0, not be dropped from the mean
    }
    metrics = retrieval_metrics(qrels, run)
    ndcg_q1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert metrics["ndcg_at_10"] == pytest.approx(ndcg_q1 / 3, abs=1e-9)
    assert metrics["mrr_at_10"] == pytest.approx(1 / 3, abs=1e-9)  # q2's first hit is at rank 12
    assert metrics["map_at_1000"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 12) / 3, abs=1e-9)
    assert metrics["recall_at_10"] == pytest.approx(1 / 3, abs=1e-9)
    assert metrics["recall_at_100"] == pytest.approx(2 / 3, abs=1e-9)


@pytest.mark.parametrize(("rank", "expected"), [(1, 1.0), (10, 0.1), (11, 0.0)])
def test_mrr_is_cut_at_rank_10(rank: int, expected: float) -> None:
    run = {"q": {f"miss{i:02d}": 1.0 - i / 100 for i in range(rank - 1)} | {"hit": 0.001}}
    assert retrieval_metrics({"q": {"hit": 1}}, run)["mrr_at_10"] == pytest.approx(expected)


def test_exact_search_ranks_by_cosine_and_skips_the_query_itself() -> None:
    documents = np.array([[1, 0], [0, 3], [1, 1], [-1, 0]], dtype=np.float32)  # unnormalised on purpose
    queries = np.array([[0, 1], [1, 0]], dtype=np.float32)
    ids = ["a", "b", "c", "d"]
    run = exact_search(queries, documents, ["b", "x"], ids, depth=3)
    assert list(run["b"]) == ["c", "a", "d"]  # "b" (cosine 1) is the query's own id
    assert list(run["x"]) == ["a", "c", "b"]
    assert run["x"]["c"] == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    kept = exact_search(queries, documents, ["b", "x"], ids, depth=10, ignore_identical_ids=False)
    assert list(kept["b"]) == ["b", "c", "a", "d"]  # depth larger than the corpus: everything


# -- readers ------------------------------------------------------------------------------------------


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), "utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), "utf-8")
    (folder / "qrels.tsv").write_text(qrels, "utf-8")
    return folder


def test_load_beir_joins_title_and_text_and_keeps_only_judged_queries(tmp_path: Path) -> None:
    folder = write_beir(
        tmp_path / "set",
        [
            {"_id": "d1", "title": "Tea", "text": "is a drink."},
            {"_id": "d2", "title": "", "text": " Water "},
            {"_id": "d3", "title": " ", "text": ""},
        ],
        [{"_id": "1", "text": "what is tea"}, {"_id": "2", "text": "unjudged"}],
        "query-id\tcorpus-id\tscore\n1\td1\t1\n1\td2\t0\n",
    )
    dataset = load_beir(folder)
    assert dataset.name == "set"
    assert dataset.corpus == {"d1": "Tea is a drink.", "d2": "Water"}
    assert dataset.blank_documents == ("d3",)
    assert dataset.queries == {"1": "what is tea"}
    assert dataset.qrels == {"1": {"d1": 1, "d2": 0}}


def test_load_beir_reads_the_beir_split_layout(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "set", [{"_id": "d1", "text": "x"}], [{"_id": "1", "text": "q"}], "")
    (folder / "qrels.tsv").unlink()
    (folder / "qrels").mkdir()
    (folder / "qrels" / "dev.tsv").write_text("1\td1\t1\n", "utf-8")
    assert load_beir(folder, split="dev").qrels == {"1": {"d1": 1}}
    with pytest.raises(EvaluationDataError, match=r"qrels\.tsv .*qrels/test\.tsv"):
        load_beir(folder)


@pytest.mark.parametrize(
    ("corpus_line", "queries", "qrels", "message"),
    [
        (
            '{"_id": "d1", "text": "x"',
            [{"_id": "1", "text": "q"}],
            "1\td1\t1\n",
            r"corpus\.jsonl:2: not valid JSON",
        ),
        (
            '{"text": "no id"}',
            [{"_id": "1", "text": "q"}],
            "1\td1\t1\n",
            r"corpus\.jsonl:2: the record has no '_id'",
        ),
        (
            '{"_id": "d1", "text": "again"}',
            [{"_id": "1", "text": "q"}],
            "1\td1\t1\n",
            "duplicate document id 'd1'",
        ),
        (
            '{"_id": "d2", "text": "y"}',
            [{"_id": "1", "text": "q"}],
            "7\td1\t1\n",
            "not in queries.jsonl: '7'",
        ),
        (
            '{"_id": "d2", "text": "y"}',
            [{"_id": "1", "text": " "}],
            "1\td1\t1\n",
            "queries with no text: '1'",
        ),
        (
            '{"_id": "d2", "text": "y"}',
            [{"_id": "1", "text": "q"}],
            "1\td1\tyes\n",
            r"qrels\.tsv:1: expected 3|qrels",
        ),
        (
            '{"_id": "d2", "text": "y"}',
            [{"_id": "1", "text": "q"}],
            "h\th\th\n1\td1\tyes\n",
            r"qrels\.tsv:2: relevance",
        ),
        ('{"_id": "d2", "text": "y"}', [{"_id": "1", "text": "q"}], "1\td1\n", r"qrels\.tsv:1: expected 3"),
    ],
)
def test_bad_beir_files_name_file_and_line(
    tmp_path: Path, corpus_line: str, queries: list[dict], qrels: str, message: str
) -> None:
    folder = write_beir(tmp_path / "set", [{"_id": "d1", "text": "x"}], queries, qrels)
    with (folder / "corpus.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(corpus_line + "\n")
    with pytest.raises(EvaluationDataError, match=message):
        load_beir(folder)


def test_missing_beir_folder_or_file(tmp_path: Path) -> None:
    with pytest.raises(EvaluationDataError, match="is not a folder"):
        load_beir(tmp_path / "absent")
    folder = write_beir(
        tmp_path / "set", [{"_id": "d1", "text": "x"}], [{"_id": "1", "text": "q"}], "1\td1\t1\n"
    )
    (folder / "queries.jsonl").unlink()
    with pytest.raises(EvaluationDataError, match=r"queries\.jsonl is missing"):
        load_beir(folder)


def test_a_corpus_that_is_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    folder = write_beir(
        tmp_path / "set", [{"_id": "d1", "text": "x"}], [{"_id": "1", "text": "q"}], "1\td1\t1\n"
    )
    with (folder / "corpus.jsonl").open("ab") as handle:
        handle.write('{"_id": "d2", "text": "thé"}\n'.encode("latin-1"))
    with pytest.raises(EvaluationDataError, match=r"corpus\.jsonl:2: not UTF-8 text \(invalid continuation"):
        load_beir(folder)


def test_the_package_keeps_every_public_name() -> None:
    """The names of the former evaluation module, importable from the package and documented."""
    import qzhou_plugins.evaluation as evaluation

    names = {
        "RETRIEVAL_DEPTH", "EvaluationDataError", "RetrievalDataset", "SentencePair", "RerankSample",
        "load_beir", "read_qrels", "read_sts_pairs", "read_rerank_samples", "EvaluationResult",
        "RetrievalResult", "STSResult", "RerankResult", "retrieval_metrics", "exact_search",
        "evaluate_retrieval", "evaluate_sts", "evaluate_reranking",
    }  # fmt: skip
    assert names <= set(evaluation.__all__)
    assert all(hasattr(evaluation, name) for name in evaluation.__all__)
    with pytest.warns(DeprecationWarning, match=r"moved to qzhou_plugins\.jsonlines"):
        from qzhou_plugins.evaluation import iter_json_objects
    assert iter_json_objects is jsonlines.iter_json_objects


def test_read_qrels_accepts_trec_four_columns(tmp_path: Path) -> None:
    path = tmp_path / "qrels.txt"
    path.write_text("1 0 d1 2\n1 0 d2 0\n", "utf-8")
    assert read_qrels(path) == {"1": {"d1": 2, "d2": 0}}


def test_read_sts_pairs_splits_on_tabs_only(tmp_path: Path) -> None:
    path = tmp_path / "sts.tsv"
    path.write_text('sentence1\tsentence2\tscore\nHe said "hi.\tA "quote\t2.5\n\nB \t C\t5\n', "utf-8")
    assert read_sts_pairs(path) == [
        SentencePair('He said "hi.', 'A "quote', 2.5),
        SentencePair("B", "C", 5.0),
    ]
    path.write_text("a\tb\t1\nc\td\n", "utf-8")
    with pytest.raises(EvaluationDataError, match=r"sts\.tsv:2: expected 3 tab-separated columns"):
        read_sts_pairs(path)
    path.write_text("a\tb\t1\nc\td\tnan\n", "utf-8")
    with pytest.raises(EvaluationDataError, match=r"sts\.tsv:2: score 'nan' is not a finite number"):
        read_sts_pairs(path)
    path.write_text("a\tb\t1\n", "utf-8")
    with pytest.raises(EvaluationDataError, match="at least 2"):
        read_sts_pairs(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"query": "", "positive": ["a"]}', "'query' must be a non-empty string"),
        ('{"query": "q", "positive": "a"}', "'positive' must be a list of strings"),
        (
            '{"query": "q", "positive": ["a"], "negative": ["b", null]}',
            r"negative\[1\] is not a non-empty string",
        ),
        ('{"query": "q", "positive": [], "negative": []}', "no candidates"),
        ('["q"]', "expected a JSON object"),
    ],
)
def test_bad_rerank_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "rerank.jsonl"
    path.write_text('{"query": "fine", "positive": ["a"], "negative": ["b"]}\n' + line + "\n", "utf-8")
    with pytest.raises(EvaluationDataError, match=rf"rerank\.jsonl:2: {message}"):
        read_rerank_samples(path)


# -- evaluations against independent computations ------------------------------------------------------


def average_precision(relevant: list[bool]) -> float:
    hits, total = 0, 0.0
    for rank, is_relevant in enumerate(relevant, 1):
        if is_relevant:
            hits += 1
            total += hits / rank
    return total / sum(relevant)


def test_reranking_matches_a_direct_computation(minilm: Encoder) -> None:
    samples = [
        RerankSample(
            "How hot should water be for green tea?",
            ["Green tea is best brewed at 70 to 80 degrees Celsius."],
            [
                "Black tea needs boiling water.",
                "The Boston Tea Party took place in 1773.",
                "Matcha is whisked with a bamboo whisk.",
            ],
        ),
        RerankSample(
            "Who wrote The Classic of Tea?",
            ["Lu Yu wrote the Cha Jing in the Tang dynasty.", "The Classic of Tea is by the scholar Lu Yu."],
            ["Tea plants are pruned to waist height.", "Rooibos is caffeine-free."],
        ),
        RerankSample("A query without positives", [], ["Nothing relevant."]),
    ]
    result = evaluate_reranking(minilm, samples, name="tea")
    expected_map, expected_mrr = [], []
    for sample in samples[:2]:
        texts = sample.positive + sample.negative
        scores = score_candidates(minilm, sample.query, texts, task="reranking")
        order = np.argsort(-scores, kind="stable")
        relevant = [int(i) < len(sample.positive) for i in order]
        expected_map.append(average_precision(relevant))
        first = relevant.index(True) + 1
        expected_mrr.append(1 / first if first <= 10 else 0.0)
    assert result.map == pytest.approx(np.mean(expected_map), abs=1e-6)
    assert result.mrr_at_10 == pytest.approx(np.mean(expected_mrr), abs=1e-6)
    assert (result.queries, result.candidates, result.skipped_queries) == (2, 8, 1)
    assert result.main_score == result.map
    assert json.loads(result.to_json())["map"] == pytest.approx(result.map)
    assert result.map > 0.5  # the positives are obviously closer: a broken scorer would fail this


def test_reranking_ties_count_against_the_model(minilm: Encoder) -> None:
    result = evaluate_reranking(minilm, [RerankSample("tea", ["same text"], ["same text"])])
    assert result.map == pytest.approx(0.5)
    assert result.mrr_at_10 == pytest.approx(0.5)


def test_sts_matches_sentence_transformers_on_a_slice(minilm: Encoder, reference) -> None:  # type: ignore[no-untyped-def]
    from scipy.stats import spearmanr

    rows = read_sts(shared_data("stsbenchmark") / "sts-test.tsv")[:200]
    pairs = [SentencePair(*row) for row in rows]
    first = reference.encode([r[0] for r in rows], normalize_embeddings=True)
    second = reference.encode([r[1] for r in rows], normalize_embeddings=True)
    expected = spearmanr([r[2] for r in rows], np.sum(first * second, axis=1)).statistic
    result = evaluate_sts(minilm, pairs, name="slice")
    assert result.spearman == pytest.approx(expected, abs=1e-3)
    assert result.pairs == 200 and result.dataset == "slice"
    assert result.query_prefix == result.document_prefix == ""  # MiniLM was trained without instructions


@pytest.fixture(scope="module")
def scifact_subset(scifact_dir: Path) -> RetrievalDataset:
    """The first 60 judged queries against their relevant abstracts plus 200 others (fixed seed)."""
    corpus = {d["_id"]: document_text(d) for d in read_jsonl(scifact_dir / "corpus.jsonl")}
    queries = {q["_id"]: q["text"] for q in read_jsonl(scifact_dir / "queries.jsonl")[:60]}
    qrels = {
        query_id: judged
        for query_id, judged in read_qrels(scifact_dir / "qrels.tsv").items()
        if query_id in queries
    }
    relevant = {doc_id for judged in qrels.values() for doc_id in judged}
    others = random.Random(6).sample(sorted(set(corpus) - relevant), 200)
    kept = sorted(relevant | set(others))
    return RetrievalDataset("scifact-subset", {d: corpus[d] for d in kept}, queries, qrels)


def test_retrieval_matches_sentence_transformers_on_a_scifact_subset(
    minilm: Encoder,
    reference,  # type: ignore[no-untyped-def]
    scifact_subset: RetrievalDataset,
) -> None:
    document_ids = list(scifact_subset.corpus)
    query_ids = list(scifact_subset.queries)
    documents = reference.encode([scifact_subset.corpus[d] for d in document_ids], normalize_embeddings=True)
    queries = reference.encode([scifact_subset.queries[q] for q in query_ids], normalize_embeddings=True)
    scores = queries @ documents.T
    ndcg = []
    for row, query_id in enumerate(query_ids):
        ranked = [document_ids[i] for i in np.argsort(-scores[row])[:10]]
        relevant = {d for d, grade in scifact_subset.qrels[query_id].items() if grade > 0}
        dcg = sum(1 / math.log2(rank + 2) for rank, d in enumerate(ranked) if d in relevant)
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(relevant), 10)))
        ndcg.append(dcg / ideal)
    expected = float(np.mean(ndcg))

    result = evaluate_retrieval(minilm, scifact_subset)
    assert result.ndcg_at_10 == pytest.approx(expected, abs=0.003)
    assert (result.queries, result.documents) == (60, len(document_ids))
    assert 0.5 < result.ndcg_at_10 < 1.0
    assert result.recall_at_10 <= result.recall_at_100 <= 1.0
    assert set(result.metrics()) == {
        "ndcg_at_10",
        "mrr_at_10",
        "map_at_1000",
        "recall_at_10",
        "recall_at_100",
    }


def test_a_custom_task_changes_the_query_side_only(minilm: Encoder) -> None:
    # What is reported depends on the task, not on the data: three short documents say it (embedding 50
    # SciFact abstracts for it took seconds for nothing).
    small = RetrievalDataset(
        "tiny",
        {"d1": "Vitamin D lowers the risk of fractures.", "d2": "Tea is a drink.", "d3": "Water boils."},
        {"q1": "Vitamin D prevents fractures", "q2": "What is tea?"},
        {"q1": {"d1": 1}, "q2": {"d2": 1}},
    )
    instruction = "Given a scientific claim, retrieve documents that support or refute the claim"
    result = evaluate_retrieval(minilm, small, task=instruction)
    assert (result.task, result.query_prefix, result.document_prefix) == ("custom", instruction, "")


def test_published_side_rule_on_a_qzhou_checkpoint(tiny_qzhou_path: str) -> None:
    """Retrieval instructs queries only and STS both sentences: the prefixes that reach the model."""
    encoder = Encoder(model=tiny_qzhou_path)
    seen: list[str] = []
    original = encoder.encode_with_prefix

    def recording(texts, prefix, **options):  # type: ignore[no-untyped-def]
        seen.append(prefix)
        return original(texts, prefix, **options)

    encoder.encode_with_prefix = recording  # type: ignore[method-assign]
    dataset = RetrievalDataset(
        "t", {"d1": "Tea is a drink.", "d2": "Water boils."}, {"q": "tea"}, {"q": {"d1": 1}}
    )
    retrieval = evaluate_retrieval(encoder, dataset)
    instructed = QZHOU_INSTRUCTION_FORMAT.format(
        instruction=TASK_TYPE_DEFAULTS[TaskType.RETRIEVAL].instruction
    )
    assert seen == ["", instructed]  # documents first, plain; then the queries, instructed
    assert (retrieval.query_prefix, retrieval.document_prefix) == (instructed, "")

    seen.clear()
    sts = evaluate_sts(encoder, [SentencePair("a cat", "a dog", 1.0), SentencePair("tea", "tea", 5.0)])
    similar = QZHOU_INSTRUCTION_FORMAT.format(instruction=TASK_TYPE_DEFAULTS[TaskType.STS].instruction)
    assert seen == [similar, similar]
    assert sts.query_prefix == sts.document_prefix == similar
