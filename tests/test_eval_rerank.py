"""The second stage of ``eval retrieval``: a reranker reorders each query's first-stage best (BEIR's
protocol), and the metrics before and after are both reported, in Python, on the command line and in
its JSON. Checked against the reordering computed by hand with ``score_candidates`` and ``rank`` (what
a user's ``rerank`` gives) on the same candidates, on a small BEIR folder written here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from qzhou_plugins import DEMO_MODEL, Encoder
from qzhou_plugins.cli import main
from qzhou_plugins.config import RerankerConfig
from qzhou_plugins.evaluation import (
    RetrievalDataset,
    RetrievalResult,
    evaluate_retrieval,
    exact_search,
    load_beir,
    retrieval_metrics,
)
from qzhou_plugins.rerank import rank, score_candidates
from qzhou_plugins.rerank.reranker import Reranker

DOCUMENTS = {
    "tea1": "Green tea is brewed with water at 70 to 80 degrees Celsius for two minutes.",
    "tea2": "Black tea needs boiling water and steeps for four to five minutes.",
    "tea3": "Matcha is powdered green tea whisked with a bamboo whisk.",
    "tea4": "Lu Yu wrote The Classic of Tea during the Tang dynasty.",
    "cof1": "Espresso is made by forcing hot water through finely ground coffee.",
    "cof2": "Arabica coffee plants grow best at high altitudes in the tropics.",
    "cof3": "A cup of brewed coffee holds about 95 milligrams of caffeine.",
    "caf1": "A cup of black tea holds about 47 milligrams of caffeine.",
    "bik1": "Inflate road bike tyres to between 80 and 130 psi.",
    "bik2": "A derailleur moves the chain from one sprocket to another.",
    "bik3": "Clean and oil the bicycle chain every few hundred kilometres.",
    "bak1": "Bread dough rises as yeast ferments the sugars in the flour.",
    "bak2": "Sourdough uses a starter of wild yeast and lactic acid bacteria.",
    "bak3": "Bake bread at 220 degrees Celsius until the crust is brown.",
    "ast1": "The Moon orbits the Earth once every 27.3 days.",
    "ast2": "Jupiter is the largest planet in the solar system.",
    "ast3": "A light year is the distance light travels in one year.",
    "gar1": "Tomatoes need full sun and regular watering.",
    "gar2": "Compost adds organic matter and nutrients to garden soil.",
    "gar3": "Prune roses in late winter before new growth begins.",
}
QUERIES = {
    "q1": ("How hot should the water be for green tea?", ["tea1"]),
    "q2": ("How much caffeine is in tea and coffee?", ["caf1", "cof3"]),
    "q3": ("How do I look after my bicycle chain?", ["bik3", "bik2"]),
    "q4": ("Why does bread dough rise?", ["bak1"]),
    "q5": ("How long does the Moon take to go around the Earth?", ["ast1"]),
    "q6": ("Which planet is the largest?", ["ast2", "gar2"]),  # gar2: a judge's odd call, ranked low
}
DEPTH = 8


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("eval-rerank") / "small-set"
    folder.mkdir()
    corpus = "".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in DOCUMENTS.items())
    (folder / "corpus.jsonl").write_text(corpus, "utf-8")
    queries = "".join(json.dumps({"_id": q, "text": text}) + "\n" for q, (text, _) in QUERIES.items())
    (folder / "queries.jsonl").write_text(queries, "utf-8")
    judged = "".join(f"{q}\t{d}\t1\n" for q, (_, relevant) in QUERIES.items() for d in relevant)
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + judged, "utf-8")
    return folder


@pytest.fixture(scope="module")
def dataset(beir_folder: Path) -> RetrievalDataset:
    return load_beir(beir_folder)


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder_path: str) -> Reranker:
    return Reranker.shared(RerankerConfig(model=tiny_cross_encoder_path))


@pytest.fixture(scope="module")
def reranked(minilm: Encoder, dataset: RetrievalDataset, cross_encoder: Reranker) -> RetrievalResult:
    """MiniLM's dense run over the small set, its best 8 per query reranked by the tiny cross-encoder."""
    return evaluate_retrieval(minilm, dataset, reranker=cross_encoder, rerank_depth=DEPTH)


def reordered_by_hand(
    minilm: Encoder, dataset: RetrievalDataset, scorer: Reranker, depth: int, task: str = "retrieval"
) -> dict[str, dict[str, float]]:
    """The dense run with each query's ``depth`` best reordered by ``score_candidates`` and ``rank``,
    one query at a time, as a user's ``rerank`` call does; the rest kept after, in dense order."""
    document_ids, query_ids = list(dataset.corpus), list(dataset.queries)
    dense = exact_search(
        minilm.encode_queries([dataset.queries[q] for q in query_ids], "retrieval"),
        minilm.encode_documents([dataset.corpus[d] for d in document_ids], "retrieval"),
        query_ids,
        document_ids,
    )
    run = {}
    for query_id, scores in dense.items():
        order = list(scores)  # exact_search returns each query's documents best first
        head = order[:depth]
        texts = [dataset.corpus[doc_id] for doc_id in head]
        reranker_scores = score_candidates(scorer, dataset.queries[query_id], texts, task=task)
        gaps = np.diff(np.sort(reranker_scores))
        assert gaps.min() > 1e-5, "near ties: the order by hand would not be a fair reference"
        final = [head[hit.index] for hit in rank(reranker_scores)] + order[depth:]
        run[query_id] = {doc_id: float(len(final) - place) for place, doc_id in enumerate(final)}
    return run


def test_cross_encoder_second_stage_equals_the_reordering_by_hand(
    minilm: Encoder, dataset: RetrievalDataset, cross_encoder: Reranker, reranked: RetrievalResult
) -> None:
    assert reranked.rerank is not None
    stage = reranked.rerank
    assert (stage.kind, stage.score_scale, stage.depth) == ("cross-encoder", "probability", DEPTH)
    assert stage.task == "none"  # a cross-encoder takes no instruction
    assert stage.pairs == DEPTH * len(QUERIES)
    expected = retrieval_metrics(dataset.qrels, reordered_by_hand(minilm, dataset, cross_encoder, DEPTH))
    assert stage.metrics == pytest.approx(expected, abs=1e-9)
    assert stage.main_score == stage.metrics["ndcg_at_10"]
    # The first stage's figures are kept as they are without a reranker.
    assert reranked.metrics() == pytest.approx(evaluate_retrieval(minilm, dataset).metrics(), abs=1e-9)
    # Below depth 8 the dense order is kept, so the same 20 documents are found by rank 100.
    assert stage.metrics["recall_at_100"] == reranked.recall_at_100 == 1.0
    # A random cross-encoder reorders: the second stage really ran on the candidates.
    assert stage.metrics["ndcg_at_10"] != pytest.approx(reranked.ndcg_at_10, abs=1e-3)


def test_the_first_stage_model_as_its_own_reranker_changes_nothing(
    minilm: Encoder, dataset: RetrievalDataset
) -> None:
    """An embedding reranker of the dense model scores the candidates with the very cosine that ranked
    them: the order within the depth, and so every metric, comes back the same."""
    embedding = Reranker.shared(RerankerConfig(model=DEMO_MODEL))
    assert embedding.kind == "embedding"
    for scorer in (embedding, minilm):  # a Reranker, or an Encoder as its own embedding reranker
        result = evaluate_retrieval(minilm, dataset, reranker=scorer)
        assert result.rerank is not None
        stage = result.rerank
        assert (stage.kind, stage.score_scale, stage.depth, stage.task) == (
            "embedding",
            "cosine",
            100,
            "retrieval",
        )
        assert stage.pairs == len(DOCUMENTS) * len(QUERIES)  # fewer documents than the depth
        assert stage.metrics == pytest.approx(result.metrics(), abs=1e-9)
    assert result.map_at_1000 < 0.99  # q6's odd judgement: an order that moved would show


def test_an_llm_reranker_gets_the_task_instruction(
    minilm: Encoder, dataset: RetrievalDataset, tiny_llm_reranker_path: str
) -> None:
    """The task of the evaluation is the LLM reranker's instruction, as ``score_candidates(task=)``
    gives it (depth 3 keeps the 18 pairs cheap)."""
    llm = Reranker.shared(RerankerConfig(model=tiny_llm_reranker_path))
    result = evaluate_retrieval(minilm, dataset, task="FiQA2018", reranker=llm, rerank_depth=3)
    assert result.rerank is not None
    assert (result.rerank.kind, result.rerank.task, result.rerank.pairs) == ("llm", "FiQA2018", 18)
    expected = retrieval_metrics(dataset.qrels, reordered_by_hand(minilm, dataset, llm, 3, "FiQA2018"))
    assert result.rerank.metrics == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_any_first_stage_is_reranked(
    mode: str, minilm: Encoder, dataset: RetrievalDataset, cross_encoder: Reranker
) -> None:
    result = evaluate_retrieval(
        None if mode == "lexical" else minilm, dataset, mode=mode, reranker=cross_encoder
    )
    assert result.mode == mode and result.rerank is not None
    assert 0 < result.rerank.pairs <= len(DOCUMENTS) * len(QUERIES)
    # Every candidate is within the depth: reranking reorders them, it finds no other.
    assert result.rerank.metrics["recall_at_100"] == pytest.approx(result.recall_at_100, abs=1e-12)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"rerank_depth": 10}, ValueError, "rerank_depth=10 without a reranker"),
        ({"rerank_depth": 0, "reranker": "x"}, ValueError, "rerank_depth must be at least 1, not 0"),
        ({"rerank_depth": 2.5, "reranker": "x"}, TypeError, "rerank_depth must be an int"),
    ],
)
def test_bad_depths_are_refused_before_any_work(
    dataset: RetrievalDataset, options: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        evaluate_retrieval(None, dataset, mode="lexical", **options)


def test_cli_prints_and_writes_both_stages(
    beir_folder: Path,
    tiny_cross_encoder_path: str,
    reranked: RetrievalResult,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "result.json"
    argv = ["eval", "retrieval", beir_folder, "--model", DEMO_MODEL, "--json", out,
            "--rerank-model", tiny_cross_encoder_path, "--rerank-depth", DEPTH]  # fmt: skip
    code = main([str(arg) for arg in argv])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "metric         first stage  reranked" in printed.out
    assert f"(cross-encoder, probability scores): the best {DEPTH} of each query" in printed.out
    result = json.loads(out.read_text("utf-8"))
    assert result["ndcg_at_10"] == pytest.approx(reranked.ndcg_at_10, abs=1e-9)
    assert result["main_score"] == result["ndcg_at_10"]
    stage = result["rerank"]
    assert {key: stage[key] for key in ("model", "kind", "score_scale", "task", "depth", "pairs")} == {
        "model": tiny_cross_encoder_path,
        "kind": "cross-encoder",
        "score_scale": "probability",
        "task": "none",
        "depth": DEPTH,
        "pairs": DEPTH * len(QUERIES),
    }
    assert reranked.rerank is not None
    assert stage["metrics"] == pytest.approx(reranked.rerank.metrics, abs=1e-9)
    assert stage["main_score"] == stage["metrics"]["ndcg_at_10"]
    table = {line.split()[0]: line.split()[1:3] for line in printed.out.splitlines() if "_at_" in line}
    assert float(table["ndcg_at_10"][1]) == pytest.approx(stage["metrics"]["ndcg_at_10"], abs=1e-5)
    parsed = RetrievalResult.model_validate_json(out.read_text("utf-8"))  # the file reads back as a result
    assert parsed.rerank is not None and parsed.rerank.metrics == stage["metrics"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rerank-model", "m", "--rerank-depth", "0"], "argument --rerank-depth: .*0"),
        (["--rerank-depth", "5"], "--rerank-depth sets the reranker, but no --rerank-model names one"),
        (["--rerank-max-length", "64"], "--rerank-max-length sets the reranker, but no --rerank-model"),
    ],
)
def test_cli_refuses_bad_rerank_flags_with_one_line(
    beir_folder: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["eval", "retrieval", str(beir_folder), "--mode", "lexical", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert re.search(message, err), err


def average_precision_and_reciprocal_rank(scores: np.ndarray, positives: int) -> tuple[float, float]:
    """AP and RR@10 of candidates whose first ``positives`` are the relevant ones, ranked by ``scores``
    (a tie puts a negative first, as the evaluation does)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], -i))
    hits = [place for place, i in enumerate(order, start=1) if i < positives]
    precision = sum(found / place for found, place in enumerate(hits, start=1)) / positives
    return precision, (1 / hits[0] if hits[0] <= 10 else 0.0)


def test_eval_rerank_scores_with_the_reranker_alone(
    tiny_cross_encoder_path: str, cross_encoder: Reranker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = [
        {"query": text, "positive": [DOCUMENTS[d] for d in relevant],
         "negative": [DOCUMENTS[d] for d in DOCUMENTS if d not in relevant][:6]}
        for text, relevant in QUERIES.values()
    ]  # fmt: skip
    source, out = tmp_path / "pairs.jsonl", tmp_path / "result.json"
    source.write_text("".join(json.dumps(sample) + "\n" for sample in samples), "utf-8")
    from qzhou_plugins import encoder as encoder_module

    encoders_before = set(encoder_module._shared)
    code = main(
        ["eval", "rerank", str(source), "--rerank-model", tiny_cross_encoder_path, "--json", str(out)]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert set(encoder_module._shared) == encoders_before  # no embedder was loaded
    scorer = f"model {tiny_cross_encoder_path} (cross-encoder, probability scores) on cpu, float32, task none"
    assert scorer in printed.out
    figures = [
        average_precision_and_reciprocal_rank(
            score_candidates(cross_encoder, s["query"], s["positive"] + s["negative"]), len(s["positive"])
        )
        for s in samples
    ]
    result = json.loads(out.read_text("utf-8"))
    assert (result["kind"], result["score_scale"], result["queries"]) == ("cross-encoder", "probability", 6)
    assert result["map"] == pytest.approx(np.mean([ap for ap, _ in figures]), abs=1e-6)
    assert result["mrr_at_10"] == pytest.approx(np.mean([rr for _, rr in figures]), abs=1e-6)
    table = {
        line.split()[0]: float(line.split()[1])
        for line in printed.out.splitlines()
        if line[:4] in ("map ", "mrr_")
    }
    assert table["map"] == pytest.approx(result["map"], abs=1e-5)
    both = ["eval", "rerank", str(source), "--rerank-model", "m", "--model", DEMO_MODEL]
    assert main(both) == 2
    assert "--model is the embedder's, but with --rerank-model" in capsys.readouterr().err
