"""A reranker served beside the embedder (``--rerank-model``), as clients meet it on /v1/rerank.

Servers: conftest's ``rerank_server`` (all-MiniLM-L6-v2 and the tiny cross-encoder, behind a key, 64
documents and 5,000 tokens per request) and ``llm_rerank_server`` (the tiny Qwen3-shaped LLM
reranker beside MiniLM). Scores are compared with the in-process :class:`Reranker` of the same
checkpoint, within 1e-5.
"""

from __future__ import annotations

import argparse
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import LLM_RERANK_MAX_LENGTH
from qzhou_plugins import DEMO_MODEL, Encoder
from qzhou_plugins.backends.local.prefix_sharing import shared_length
from qzhou_plugins.rerank import Reranker, rerank, score_candidates
from servers import HOST, RERANK_NAME, ServerProcess

QUERY = "how is green tea made?"
PASSAGES = [
    "Green tea is steamed or pan-fired soon after picking.",
    "Black tea leaves are fully oxidised before drying.",
    "The stock market fell sharply on Monday.",
    "Matcha is stone-ground shade-grown tea.",
]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder_path: str) -> Reranker:
    return Reranker.shared(model=tiny_cross_encoder_path)


def results_of(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return list(answer.json()["results"])


def assert_ranked_like(results: list[dict[str, Any]], expected: list[Any]) -> None:
    assert [r["index"] for r in results] == [c.index for c in expected]
    served = [r["relevance_score"] for r in results]
    assert np.allclose(served, [c.score for c in expected], rtol=0, atol=TOLERANCE), served


def test_cohere_and_jina_shapes_score_as_the_in_process_cross_encoder(
    rerank_server: ServerProcess, cross_encoder: Reranker
) -> None:
    expected = rerank(cross_encoder, QUERY, PASSAGES)
    for path in ("/v1/rerank", "/rerank"):
        answer = rerank_server.post(path, {"model": RERANK_NAME, "query": QUERY, "documents": PASSAGES})
        assert_ranked_like(results_of(answer), expected)
        assert answer.json()["model"] == RERANK_NAME and answer.json()["usage"]["total_tokens"] > 0
    jina = {
        "query": QUERY,
        "documents": [{"text": t} for t in PASSAGES],
        "top_n": 2,
        "return_documents": True,
    }
    results = results_of(rerank_server.post("/v1/rerank", jina))  # no model: the served reranker
    assert_ranked_like(results, expected[:2])
    assert [r["document"]["text"] for r in results] == [PASSAGES[c.index] for c in expected[:2]]
    # The test can fail: the cross-encoder's probabilities are not the embedder's cosines.
    cosines = score_candidates(Encoder.shared(model=DEMO_MODEL), QUERY, PASSAGES)
    assert np.abs(cosines - score_candidates(cross_encoder, QUERY, PASSAGES)).max() > 0.01


def test_model_routing_and_the_model_list(rerank_server: ServerProcess) -> None:
    minilm = Encoder.shared(model=DEMO_MODEL)
    for name in (DEMO_MODEL, DEMO_MODEL + "-query"):  # the embedder's names: its cosine, as before
        answer = rerank_server.post("/v1/rerank", {"model": name, "query": QUERY, "documents": PASSAGES})
        assert_ranked_like(results_of(answer), rerank(minilm, QUERY, PASSAGES))
        assert answer.json()["model"] == name
    for model in ("text-embedding-3-small", "/etc/passwd"):
        answer = rerank_server.post("/rerank", {"model": model, "query": QUERY, "documents": PASSAGES})
        assert answer.status_code == 404, answer.text
        error = answer.json()["error"]
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert repr(RERANK_NAME) in error["message"] and repr(DEMO_MODEL) in error["message"]
    cards = httpx.get(rerank_server.url + "/v1/models", headers=rerank_server.headers, timeout=10).json()
    by_id = {card["id"]: card for card in cards["data"]}
    assert list(by_id) == [DEMO_MODEL, DEMO_MODEL + "-query", RERANK_NAME]
    assert (
        by_id[RERANK_NAME]["kind"] == "cross-encoder" and by_id[RERANK_NAME]["score_scale"] == "probability"
    )
    assert by_id[RERANK_NAME]["max_length"] == 512 and "dimension" not in by_id[RERANK_NAME]
    assert (by_id[DEMO_MODEL]["kind"], by_id[DEMO_MODEL]["score_scale"]) == ("embedding", "cosine")
    health = httpx.get(rerank_server.url + "/health", timeout=10).json()
    assert health == {"status": "ok", "model": DEMO_MODEL, "rerank_model": RERANK_NAME}


def test_concurrent_requests_share_score_pairs_calls(
    rerank_server: ServerProcess, cross_encoder: Reranker
) -> None:
    queries = [f"question {i} about {'tea' if i % 2 else 'markets'}" for i in range(16)]
    expected = [score_candidates(cross_encoder, query, PASSAGES) for query in queries]
    calls_before = rerank_server.metric("qzhou_rerank_batch_requests_count")
    requests_before = rerank_server.metric("qzhou_rerank_batch_requests_sum")

    def one(i: int) -> list[dict[str, Any]]:
        return results_of(rerank_server.post("/v1/rerank", {"query": queries[i], "documents": PASSAGES}))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, range(len(queries))))
    for results, scores in zip(answers, expected, strict=True):
        served = np.zeros(len(PASSAGES))
        served[[r["index"] for r in results]] = [r["relevance_score"] for r in results]
        assert np.abs(served - scores).max() < TOLERANCE
    calls = rerank_server.metric("qzhou_rerank_batch_requests_count") - calls_before
    coalesced = rerank_server.metric("qzhou_rerank_batch_requests_sum") - requests_before
    assert coalesced == len(queries) and calls < len(queries), (calls, coalesced)  # requests shared calls
    assert rerank_server.metric("qzhou_rerank_queue_pairs") == 0


def test_a_rerank_whose_client_hung_up_is_dropped_before_it_is_scored(rerank_server: ServerProcess) -> None:
    documents = [f"passage {i}: " + "the tide comes in and the tide goes out " * 40 for i in range(16)]
    body = {"model": DEMO_MODEL, "query": QUERY, "documents": documents}  # 17 texts of MiniLM's 256 tokens
    full = rerank_server.raw_post("/v1/rerank", body)
    encoded_before = rerank_server.metric("qzhou_batch_texts_sum")
    for _ in range(3):
        with socket.create_connection((HOST, rerank_server.port), timeout=10) as impatient:
            impatient.sendall(full)  # a whole request, gone before its answer
            time.sleep(0.05)
    answer = rerank_server.post("/v1/rerank", {"model": DEMO_MODEL, "query": QUERY, "documents": PASSAGES})
    assert_ranked_like(results_of(answer), rerank(Encoder.shared(model=DEMO_MODEL), QUERY, PASSAGES))
    # The first impatient request was already with the model; the two behind it were dropped unscored.
    assert rerank_server.metric("qzhou_batch_texts_sum") - encoded_before <= 17 + 1 + len(PASSAGES)
    assert rerank_server.metric("qzhou_queue_texts") == 0


BAD_REQUESTS = [
    ({"query": "q", "documents": ["a", " "]}, 400, "documents", "whitespace-only: position(s) 1"),
    ({"query": "q", "documents": ["a", None]}, 400, "documents", "None at position(s) 1"),
    ({"query": " ", "documents": ["a"]}, 400, "query", "query must not be empty"),
    ({"query": "q", "documents": ["a"], "instruction": "Find tea"}, 400, "instruction", "cross-encoder"),
    ({"query": "q", "documents": ["a"], "task": "nonsense"}, 400, "task", "Unknown task"),
    ({"query": "q", "documents": ["a"], "top_n": -1}, 400, "top_n", "top_n must be at least 0"),
    ({"query": "q", "documents": ["a"] * 65}, 413, "documents", "at most 64 per request"),
    ({"query": "q", "documents": ["a", "t" * 70_000]}, 413, "documents", "at most 65536 per text"),
    ({"query": "q", "documents": [f"tea {i} " + "tea " * 100 for i in range(60)]}, 413, None,
     "at most 5000 per request"),
    ({"query": "tea " * 600, "documents": ["a"]}, 400, None, "the query alone takes"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "param", "words"), BAD_REQUESTS)
def test_bad_requests_are_refused_naming_the_problem(
    rerank_server: ServerProcess, body: dict[str, Any], status: int, param: str | None, words: str
) -> None:
    answer = rerank_server.post("/v1/rerank", body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert words in error["message"] and error["param"] == param, error


def test_a_served_llm_reranker_takes_the_instruction(
    llm_rerank_server: ServerProcess, tiny_llm_reranker_path: str
) -> None:
    local = Reranker.shared(model=tiny_llm_reranker_path)
    instruction = "Given a question about tea, find the passage that answers it"
    for extra in ({}, {"instruction": instruction}, {"task": "sts"}):
        answer = llm_rerank_server.post("/v1/rerank", {"query": QUERY, "documents": PASSAGES, **extra})
        expected = rerank(local, QUERY, PASSAGES, **extra)  # type: ignore[arg-type]
        assert_ranked_like(results_of(answer), expected)
    default = score_candidates(local, QUERY, PASSAGES)
    assert np.abs(score_candidates(local, QUERY, PASSAGES, instruction=instruction) - default).max() > 1e-4
    cards = httpx.get(llm_rerank_server.url + "/v1/models", timeout=10).json()["data"]
    card = cards[-1]
    assert (card["id"], card["kind"], card["score_scale"], card["max_length"]) == (
        tiny_llm_reranker_path,
        "llm",
        "probability",
        LLM_RERANK_MAX_LENGTH,  # --rerank-max-length
    )


def test_a_served_llm_reranker_counts_the_shared_prefix_once(
    llm_rerank_server: ServerProcess, tiny_llm_reranker_path: str
) -> None:
    local = Reranker(model=tiny_llm_reranker_path, max_length=LLM_RERANK_MAX_LENGTH)
    documents = [*PASSAGES, PASSAGES[0], "tea " * 400]  # a repeat (scored once) and one cut to fit
    answer = llm_rerank_server.post("/v1/rerank", {"query": QUERY, "documents": documents})
    assert_ranked_like(results_of(answer), rerank(local, QUERY, documents))
    rows = local.backend._llm_tokens([QUERY] * 5, [*PASSAGES, documents[-1]], None)  # type: ignore[union-attr]
    shared = shared_length(rows)
    assert max(len(row) for row in rows) == LLM_RERANK_MAX_LENGTH and shared > 10
    assert answer.json()["usage"]["total_tokens"] == shared + sum(len(row) - shared for row in rows)


def test_the_rerank_options(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from qzhou_plugins.server import add_server_arguments, serve_from_arguments
    from qzhou_plugins.server.options import settings_from_arguments

    parser = add_server_arguments(argparse.ArgumentParser())
    settings = settings_from_arguments(parser.parse_args(["--model", "m", "--rerank-model", "r"]))
    assert (settings.rerank_name, settings.reranker_config().model) == ("r", "r")  # type: ignore[union-attr]
    assert settings_from_arguments(parser.parse_args([])).reranker_config() is None
    for argv, words in (
        (["--model", "m", "--rerank-model", "r", "--rerank-served-name", "m-query"], "also the embedder's"),
        (["--rerank-served-name", "x"], "no rerank_model is served"),
        (["--rerank-max-length", "64"], "rerank_max_length sets the reranker, but no rerank_model"),
    ):
        assert serve_from_arguments(parser.parse_args(argv)) == 2
        assert words in capsys.readouterr().err
