"""The remote reranker (``Reranker(model=NAME, base_url=...)``) against real servers on 127.0.0.1: ours
(conftest's ``rerank_server`` and ``llm_rerank_server``) and Infinity serving the tiny cross-encoder
(``infinity_url``). The kind and the score scale come from what each server says of the model, and
the scores equal the in-process reranker's of the same checkpoint within 1e-5 (Infinity applies the
sigmoid, as the checkpoint's own activation does here).
"""

from __future__ import annotations

import numpy as np
import pytest

from qzhou_plugins import DEMO_MODEL, Encoder
from qzhou_plugins.backends.remote_rerank import REQUEST_DOCUMENTS, RemoteReranker
from qzhou_plugins.backends.transport import RemoteBackendError
from qzhou_plugins.rerank import Reranker, rerank, score_candidates
from servers import RERANK_NAME, SERVER_KEY, ServerProcess, free_port

QUERIES = ["how is green tea made?", "why did the market fall?"]
PASSAGES = [
    "Green tea is steamed or pan-fired soon after picking.",
    "Black tea leaves are fully oxidised before drying.",
    "The stock market fell sharply on Monday.",
    "Matcha is stone-ground shade-grown tea.",
]
MANY = [f"{PASSAGES[i % len(PASSAGES)]} (note {i})" for i in range(REQUEST_DOCUMENTS * 2 + 5)]
"""More documents than one request takes: several requests per query, put back in order."""
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder_path: str) -> Reranker:
    return Reranker.shared(model=tiny_cross_encoder_path)


def assert_pairs_scored_alike(remote: Reranker, local: Reranker) -> None:
    queries = [QUERIES[i % 2] for i in range(len(MANY))]
    got, expected = remote.score_pairs(queries, MANY), local.score_pairs(queries, MANY)
    assert got.dtype == np.float32 and np.abs(got - expected).max() < TOLERANCE
    ranked = rerank(remote, QUERIES[0], PASSAGES, top_n=3)
    assert [c.index for c in ranked] == [c.index for c in rerank(local, QUERIES[0], PASSAGES, top_n=3)]


def test_our_served_cross_encoder(rerank_server: ServerProcess, cross_encoder: Reranker) -> None:
    remote = Reranker(model=RERANK_NAME, base_url=rerank_server.url + "/v1", api_key=SERVER_KEY)
    assert isinstance(remote.backend, RemoteReranker) and remote.backend.served.api == "qzhou"
    assert (remote.kind, remote.score_scale, remote.facts.max_length) == ("cross-encoder", "probability", 512)
    assert_pairs_scored_alike(remote, cross_encoder)
    with pytest.raises(ValueError, match="cross-encoder: it takes no instruction"):
        remote.score_pairs(QUERIES[:1], PASSAGES[:1], instruction="Find tea")


def test_the_embedders_name_is_still_its_embedding_reranker(rerank_server: ServerProcess) -> None:
    remote = Reranker(model=DEMO_MODEL, base_url=rerank_server.url + "/v1", api_key=SERVER_KEY)
    assert remote.kind == "embedding" and remote.score_scale == "cosine" and remote.backend is None
    local = score_candidates(Encoder.shared(model=DEMO_MODEL), QUERIES[0], PASSAGES)
    assert np.abs(score_candidates(remote, QUERIES[0], PASSAGES) - local).max() < TOLERANCE


def test_our_served_llm_reranker_gets_the_instruction(
    llm_rerank_server: ServerProcess, tiny_llm_reranker_path: str
) -> None:
    remote = Reranker(model=tiny_llm_reranker_path, base_url=llm_rerank_server.url + "/v1")
    local = Reranker.shared(model=tiny_llm_reranker_path)
    assert (remote.kind, remote.score_scale, remote.facts.instructed) == ("llm", "probability", True)
    for options in ({}, {"instruction": "Find the passage about tea"}, {"task": "sts"}):
        got = score_candidates(remote, QUERIES[0], PASSAGES, **options)  # type: ignore[arg-type]
        expected = score_candidates(local, QUERIES[0], PASSAGES, **options)  # type: ignore[arg-type]
        assert np.abs(got - expected).max() < TOLERANCE, options


def test_infinity_serving_the_cross_encoder(infinity_url: str, cross_encoder: Reranker) -> None:
    remote = Reranker(model=RERANK_NAME, base_url=infinity_url)
    assert isinstance(remote.backend, RemoteReranker) and remote.backend.served.api == "cohere"
    assert (remote.kind, remote.score_scale) == ("cross-encoder", "probability")
    assert_pairs_scored_alike(remote, cross_encoder)
    # Infinity lists its embedder without "rerank": that name is an embedding reranker.
    assert Reranker(model=DEMO_MODEL, base_url=infinity_url).kind == "embedding"
    with pytest.raises(RemoteBackendError, match="serves 'tiny-cross-encoder' as a reranker of kind"):
        Reranker(model=RERANK_NAME, base_url=infinity_url, kind="llm")


def test_failures_name_the_server(rerank_server: ServerProcess) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(RemoteBackendError, match=f"the rerank server at {closed} cannot be reached"):
        Reranker(model=RERANK_NAME, base_url=closed, retries=0)
    served = {"model": RERANK_NAME, "base_url": rerank_server.url + "/v1"}
    with pytest.raises(RemoteBackendError, match="answered 401: missing or wrong API key"):
        Reranker(**served, api_key="wrong")
    with pytest.raises(ValueError, match=r"label decide.* names a served one"):
        Reranker(**served, api_key=SERVER_KEY, label=0)
