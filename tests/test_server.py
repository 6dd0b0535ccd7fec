"""The embedding server as its users meet it: real ``python -m qzhou_plugins.server`` processes on
127.0.0.1, on free ports, stopped at the end.

Servers: the session's all-MiniLM-L6-v2 and tiny QZhou servers behind an API key (conftest's
``minilm_server`` and ``qzhou_server``: parity of the numbers, the instruction sides, errors,
concurrency, dropped clients), a restricted MiniLM server of this module (no key, a served name, a
tiny queue and limits), and short-lived ones for SIGTERM and a model that cannot load. Every loop is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qzhou_plugins import DEMO_MODEL, Encoder
from qzhou_plugins.rerank import rerank
from servers import (
    HOST,
    SERVER_KEY,
    STARTUP_SECONDS,
    ServerProcess,
    launch,
    rows_of,
    stop,
    wait_ready,
)

MIN_COSINE = 0.99999


def assert_same_vectors(served: np.ndarray, local: np.ndarray) -> None:
    assert served.shape == local.shape
    cosines = np.sum(served * local, axis=1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(local, axis=1)
    )
    assert cosines.min() >= MIN_COSINE, cosines


QUESTIONS = ["what causes rain?", "how do vaccines train the immune system?"]
PASSAGES = [
    "Rain forms when water vapour condenses into droplets heavy enough to fall.",
    "Vaccines expose the immune system to a harmless piece of a pathogen.\nMemory cells remain.",
    "The stock market fell sharply on Monday.",
]


# -- parity with the in-process encoder ------------------------------------------------------------


def test_minilm_vectors_equal_the_in_process_encoder(minilm_server: ServerProcess, minilm: Encoder) -> None:
    local = minilm.encode_documents(PASSAGES)
    for encoding_format in ("float", "base64"):
        body = {"input": PASSAGES, "model": DEMO_MODEL, "encoding_format": encoding_format}
        assert_same_vectors(minilm_server.embed(body), local)
    one = minilm_server.post("/v1/embeddings", {"input": QUESTIONS[0]}).json()
    assert one["object"] == "list" and one["model"] == DEMO_MODEL and one["data"][0]["object"] == "embedding"
    assert_same_vectors(rows_of(one), minilm.encode_queries(QUESTIONS[:1]))
    counted = minilm.backend.count_tokens(QUESTIONS[:1])
    assert one["usage"] == {"prompt_tokens": counted[0], "total_tokens": counted[0]}


@pytest.mark.parametrize(
    "task", [None, "sts", "FiQA2018", "Given a question, find the passage that answers it"]
)
def test_qzhou_instruction_sides_equal_the_in_process_encoder(
    qzhou_server: ServerProcess, tiny_qzhou: Encoder, tiny_qzhou_path: str, task: str | None
) -> None:
    queries = tiny_qzhou.encode_queries(QUESTIONS, task)
    documents = tiny_qzhou.encode_documents(PASSAGES, task)
    extra = {} if task is None else {"task": task}
    for encoding_format in ("float", "base64"):
        common = {"encoding_format": encoding_format, **extra}
        assert_same_vectors(
            qzhou_server.embed({"input": PASSAGES, "model": tiny_qzhou_path, **common}), documents
        )
        by_field = qzhou_server.embed({"input": QUESTIONS, "input_type": "query", **common})
        assert_same_vectors(by_field, queries)
        by_alias = qzhou_server.embed({"input": QUESTIONS, "model": tiny_qzhou_path + "-query", **common})
        assert_same_vectors(by_alias, queries)
    # The test can fail: the instruction really changes the query vectors.
    bare = tiny_qzhou.encode(QUESTIONS)
    assert np.max(np.sum(bare * queries, axis=1)) < 0.999


def test_rerank_equals_the_core(
    qzhou_server: ServerProcess, tiny_qzhou: Encoder, tiny_qzhou_path: str
) -> None:
    local = rerank(tiny_qzhou, QUESTIONS[0], PASSAGES)
    for path in ("/v1/rerank", "/rerank"):
        answer = qzhou_server.post(path, {"query": QUESTIONS[0], "documents": PASSAGES})
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [r["index"] for r in results] == [c.index for c in local]
        assert np.allclose([r["relevance_score"] for r in results], [c.score for c in local], atol=1e-5)
        assert "document" not in results[0]
    objects = [{"text": text} for text in PASSAGES]
    body = {"query": QUESTIONS[0], "documents": objects, "top_n": 2, "return_documents": True, "task": "sts"}
    answer = qzhou_server.post("/v1/rerank", body).json()
    expected = rerank(tiny_qzhou, QUESTIONS[0], PASSAGES, top_n=2, task="sts")
    assert [(r["index"], r["document"]["text"]) for r in answer["results"]] == [
        (c.index, PASSAGES[c.index]) for c in expected
    ]
    assert answer["model"] == tiny_qzhou_path and answer["usage"]["total_tokens"] > 0


# -- models, auth, errors --------------------------------------------------------------------------


def test_models_health_and_the_api_key(minilm_server: ServerProcess) -> None:
    models = httpx.get(minilm_server.url + "/v1/models", headers=minilm_server.headers, timeout=10).json()
    assert [card["id"] for card in models["data"]] == [DEMO_MODEL, DEMO_MODEL + "-query"]
    assert models["data"][0]["dimension"] == 384 and models["data"][1]["input_type"] == "query"
    assert models["data"][0]["runtime"] == "cpu, float32"  # the suite pins fp32 (tests/conftest.py)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": SERVER_KEY}):
        for answer in (
            httpx.get(minilm_server.url + "/v1/models", headers=headers, timeout=10),
            minilm_server.post("/v1/embeddings", {"input": "x"}, headers=headers),
            minilm_server.post("/v1/rerank", {"query": "x", "documents": ["y"]}, headers=headers),
        ):
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["code"] == "invalid_api_key"
            assert answer.headers["WWW-Authenticate"] == "Bearer"
    # Load balancers and scrapers need no key.
    assert httpx.get(minilm_server.url + "/health", timeout=10).json()["status"] == "ok"
    assert "qzhou_requests_total" in httpx.get(minilm_server.url + "/metrics", timeout=10).text


def test_no_key_needed_when_none_is_set_and_the_served_name_is_the_model(
    restricted_server: Callable[[], ServerProcess],
) -> None:
    server = restricted_server()  # no key, --served-name
    models = httpx.get(server.url + "/v1/models", timeout=10)
    assert models.status_code == 200
    assert [card["id"] for card in models.json()["data"]] == [RESTRICTED_NAME, RESTRICTED_NAME + "-query"]
    answer = server.post("/v1/embeddings", {"input": "x", "model": RESTRICTED_NAME + "-query"}, headers={})
    assert answer.status_code == 200 and answer.json()["model"] == RESTRICTED_NAME + "-query"


LANGCHAIN_HINT = "check_embedding_ctx_length=False"
BAD_EMBEDDING_REQUESTS = [
    ({"input": ["fine", ""]}, "input", "input must not be empty or whitespace-only: position(s) 1"),
    ({"input": ["ok", "   ", "ok"]}, "input", "position(s) 1"),
    ({"input": ["ok", "\u200b\ufeff"]}, "input", "input must have visible content: position(s) 1"),
    ({"input": ["ok", 3, None]}, "input", "None at position(s) 2; non-string (int) at position(s) 1"),
    ({"input": []}, "input", "input must not be an empty list"),
    ({"input": {"text": "x"}}, "input", "input must be a list of strings, not a dict"),
    ({"input": [101, 2023, 102]}, "input", LANGCHAIN_HINT),
    ({"input": [[101, 2023], [7]]}, "input", LANGCHAIN_HINT),
    ({"input": "x", "dimensions": 128}, "dimensions", "not a Matryoshka model"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format", "'float' or 'base64'"),
    ({"input": "x", "input_type": "passage"}, "input_type", "'query' or 'document'"),
    ({"input": "x", "task": "FiQA2019"}, "task", "Close matches: FiQA2018"),
    ({"input": "x", "task": "/etc/passwd"}, "task", "Unknown task '/etc/passwd'"),
    ({"input": "x", "taks": "sts"}, "taks", "unknown field 'taks'"),
    ({"model": DEMO_MODEL}, "input", "input: Field required"),
    (
        {"input": "x", "model": DEMO_MODEL + "-query", "input_type": "document"},
        "input_type",
        "embeds queries",
    ),
]


@pytest.mark.parametrize(("body", "param", "words"), BAD_EMBEDDING_REQUESTS)
def test_bad_embedding_requests_get_400_naming_the_problem(
    minilm_server: ServerProcess, body: dict[str, Any], param: str, words: str
) -> None:
    answer = minilm_server.post("/v1/embeddings", body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert words in error["message"] and error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_unknown_models_paths_and_bodies(minilm_server: ServerProcess) -> None:
    for model in ("text-embedding-3-small", "/etc/passwd", "sentence-transformers/all-mpnet-base-v2"):
        for path, body in (
            ("/v1/embeddings", {"input": "x"}),
            ("/rerank", {"query": "x", "documents": ["y"]}),
        ):
            answer = minilm_server.post(path, {**body, "model": model})
            assert answer.status_code == 404, answer.text
            error = answer.json()["error"]
            assert error["code"] == "model_not_found" and repr(DEMO_MODEL) in error["message"]
    answer = httpx.get(minilm_server.url + "/v2/nothing", timeout=10)
    assert answer.status_code == 404 and "/v1/embeddings" in answer.json()["error"]["message"]
    for content, content_type, words in (
        (b'{"input": ', "application/json", "not valid JSON"),
        (b'{"input": "x"}', "text/plain", "Content-Type: application/json"),
    ):
        headers = {**minilm_server.headers, "Content-Type": content_type}
        raw = httpx.post(minilm_server.url + "/v1/embeddings", content=content, headers=headers, timeout=10)
        assert raw.status_code == 400 and words in raw.json()["error"]["message"]


BAD_RERANK_REQUESTS = [
    ({"query": " ", "documents": ["a"]}, "query", "query must not be empty"),
    ({"query": 7, "documents": ["a"]}, "query", "query must be a string, not int"),
    ({"query": "q", "documents": ["a", ""]}, "documents", "whitespace-only: position(s) 1"),
    ({"query": "q", "documents": ["a", {"title": "b"}]}, "documents", "1 are objects without a 'text'"),
    ({"query": "q", "documents": "a"}, "documents", "documents must be a list"),
    ({"query": "q", "documents": ["a"], "top_n": -1}, "top_n", "top_n must be at least 0"),
    ({"query": "q", "documents": ["a"], "top_n": True}, "top_n", "valid integer"),
    ({"query": "q", "documents": ["a"], "task": "nonsense"}, "task", "Unknown task"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param", "words"), BAD_RERANK_REQUESTS)
def test_bad_rerank_requests_get_400(
    minilm_server: ServerProcess, body: dict[str, Any], param: str, words: str
) -> None:
    answer = minilm_server.post("/v1/rerank", body)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"]["message"] and answer.json()["error"]["param"] == param


# -- concurrency and clients that go away ------------------------------------------------------------


def payloads() -> list[dict[str, Any]]:
    """40 distinct requests: single strings and lists, both sides, both encodings."""
    made = []
    for i in range(40):
        texts = [f"request {i} sentence {j} about rain" + " and snow" * (i % 5) for j in range(i % 4)]
        body: dict[str, Any] = {"input": texts or f"just one text number {i}", "model": DEMO_MODEL}
        if i % 3 == 0:
            body["input_type"] = "query"
        if i % 2:
            body["encoding_format"] = "base64"
        made.append(body)
    return made


def test_500_concurrent_requests_get_their_own_vectors_and_share_batches(
    minilm_server: ServerProcess,
) -> None:
    bodies = payloads()
    sequential = [minilm_server.embed(body) for body in bodies]
    order = [i % len(bodies) for i in range(500)]
    batches_before = minilm_server.metric("qzhou_batch_requests_count")
    requests_before = minilm_server.metric("qzhou_batch_requests_sum")
    # 500 requests in flight at once, over 2 x 16 connections (httpx's pool slows down past that).
    limits = httpx.Limits(max_connections=16)

    def threaded() -> list[tuple[int, np.ndarray]]:
        with httpx.Client(headers=minilm_server.headers, timeout=60, limits=limits) as client:

            def one(i: int) -> tuple[int, np.ndarray]:
                answer = client.post(minilm_server.url + "/v1/embeddings", json=bodies[i])
                assert answer.status_code == 200, answer.text
                return i, rows_of(answer.json())

            with ThreadPoolExecutor(max_workers=32) as pool:
                return list(pool.map(one, order[:250]))

    async def asynchronous() -> list[tuple[int, np.ndarray]]:
        async with httpx.AsyncClient(headers=minilm_server.headers, timeout=60, limits=limits) as client:

            async def one(i: int) -> tuple[int, np.ndarray]:
                answer = await client.post(minilm_server.url + "/v1/embeddings", json=bodies[i])
                assert answer.status_code == 200, answer.text
                return i, rows_of(answer.json())

            return await asyncio.gather(*(one(i) for i in order[250:]))

    with ThreadPoolExecutor(max_workers=1) as side:
        in_threads = side.submit(threaded)
        results = asyncio.run(asyncio.wait_for(asynchronous(), 120)) + in_threads.result(timeout=120)
    assert len(results) == 500
    for i, rows in results:
        assert rows.shape == sequential[i].shape
        assert np.abs(rows - sequential[i]).max() < 1e-5, i
    batches = minilm_server.metric("qzhou_batch_requests_count") - batches_before
    coalesced = minilm_server.metric("qzhou_batch_requests_sum") - requests_before
    assert coalesced == 500 and batches < 500  # requests really shared encode calls
    buckets = httpx.get(minilm_server.url + "/metrics", timeout=10).text
    single = float(re.search(r'qzhou_batch_requests_bucket\{le="1.0"\} (\S+)', buckets).group(1))
    assert minilm_server.metric("qzhou_batch_requests_count") > single  # some batch held several requests


def test_clients_that_go_away_do_not_wedge_the_server(minilm_server: ServerProcess, minilm: Encoder) -> None:
    full = minilm_server.raw_post("/v1/embeddings", {"input": long_texts(16)})
    encoded_before = minilm_server.metric("qzhou_batch_texts_sum")
    held = socket.create_connection((HOST, minilm_server.port), timeout=10)
    held.sendall(full[: len(full) // 2])  # half a request, left open for the whole test
    for _ in range(3):
        with socket.create_connection((HOST, minilm_server.port), timeout=10) as half:
            half.sendall(full[: len(full) // 3])  # half a request, then gone
        with socket.create_connection((HOST, minilm_server.port), timeout=10) as impatient:
            impatient.sendall(full)  # a whole request, gone before its answer
            time.sleep(0.05)
    start = time.monotonic()
    assert_same_vectors(minilm_server.embed({"input": PASSAGES}), minilm.encode_documents(PASSAGES))
    assert time.monotonic() - start < 30
    # The first impatient request was already with the model; the two behind it were dropped.
    assert minilm_server.metric("qzhou_batch_texts_sum") - encoded_before < 3 * 16 + len(PASSAGES)
    deadline = time.monotonic() + 30
    while minilm_server.metric("qzhou_queue_texts") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert minilm_server.metric("qzhou_queue_texts") == 0
    held.close()
    assert minilm_server.process.poll() is None


# -- limits, a full queue, shutdown, a model that cannot load ------------------------------------------


@pytest.fixture(scope="module")
def restricted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], ServerProcess]]:
    """MiniLM served as RESTRICTED_NAME, with no key, that lets 2 texts wait and takes 16 texts, 4,000
    tokens and 100,000 bytes per request; started again if a test (SIGTERM) has stopped it."""
    started: list[ServerProcess] = []
    options = ("--served-name", RESTRICTED_NAME, "--max-queue", "2", "--max-inputs", "16")
    options += ("--max-request-tokens", "4000")
    options += ("--max-body-bytes", str(RESTRICTED_BODY_BYTES))

    def running() -> ServerProcess:
        if not started or started[-1].process.poll() is not None:
            log = tmp_path_factory.mktemp("restricted") / "server.log"
            started.append(wait_ready(launch(DEMO_MODEL, log, *options)))
        return started[-1]

    try:
        yield running
    finally:
        for server in started:
            stop(server)


RESTRICTED_NAME = "minilm-restricted"
RESTRICTED_BODY_BYTES = 100_000
MINILM_TEXT_CHARACTERS = 128 * 256
"""The server's character limit per text for all-MiniLM-L6-v2: 128 per token of its max_length."""


def long_texts(count: int) -> list[str]:
    """Texts of more than 256 tokens: all-MiniLM-L6-v2 keeps 256 of each."""
    return [f"passage {i}: " + "the tide comes in and the tide goes out " * 40 for i in range(count)]


def test_requests_over_the_limits_get_413(restricted_server: Callable[[], ServerProcess]) -> None:
    server = restricted_server()
    too_many = server.post("/v1/embeddings", {"input": ["x"] * 17})
    assert too_many.status_code == 413 and "at most 16 per request" in too_many.json()["error"]["message"]
    documents = server.post("/v1/rerank", {"query": "q", "documents": ["x"] * 17})
    assert documents.status_code == 413 and documents.json()["error"]["param"] == "documents"
    too_long = server.post("/v1/embeddings", {"input": long_texts(16)})  # 16 x 256 tokens
    assert too_long.status_code == 413, too_long.text
    assert "4096 tokens" in too_long.json()["error"]["message"]
    assert too_long.json()["error"]["code"] == "too_many_tokens"


def post_bytes(server: ServerProcess, path: str, content: Any) -> httpx.Response:
    """A raw body: bytes (sent with Content-Length) or an iterator of bytes (sent chunked)."""
    headers = {**server.headers, "Content-Type": "application/json"}
    return httpx.post(server.url + path, content=content, headers=headers, timeout=120)


def chunks(total: int, sent: list[int], size: int = 65_536) -> Iterator[bytes]:
    """``total`` bytes of body in pieces, counting in ``sent`` what the server let the client send."""
    for _ in range(total // size):
        sent[0] += size
        yield b"x" * size


def test_bodies_and_texts_over_the_limits_get_413_on_both_routes(
    restricted_server: Callable[[], ServerProcess],
) -> None:
    server = restricted_server()
    refused = server.metric('qzhou_errors_total{code="body_too_large",route="/v1/embeddings"}')
    fits = {"input": ["x" * 30_000, "y" * 30_000, "z" * 30_000]}  # 90 kB: under 100,000 bytes
    assert server.post("/v1/embeddings", fits).status_code == 200
    over = json.dumps({"input": ["x" * 30_000] * 4}).encode()  # 120 kB
    rerank = json.dumps({"query": "q", "documents": ["x" * 30_000] * 4}).encode()
    sent = [0]
    for path, content in (
        ("/v1/embeddings", over),
        ("/v1/rerank", rerank),
        ("/v1/embeddings", chunks(64 * 2**20, sent)),  # 64 MiB, chunked: no Content-Length
    ):
        answer = post_bytes(server, path, content)
        assert answer.status_code == 413, answer.text
        error = answer.json()["error"]
        assert error["code"] == "body_too_large" and "at most 100000 bytes" in error["message"], error
        assert "--max-body-bytes" in error["message"]
    assert sent[0] < 32 * 2**20, sent  # the server stopped reading soon after the limit
    assert server.metric('qzhou_errors_total{code="body_too_large",route="/v1/embeddings"}') == refused + 2
    longest = "t" * (MINILM_TEXT_CHARACTERS + 1)
    for path, body, param in (
        ("/v1/embeddings", {"input": ["fine", longest]}, "input"),
        ("/v1/rerank", {"query": longest, "documents": ["fine"]}, "query"),
        ("/v1/rerank", {"query": "q", "documents": ["fine", {"text": longest}]}, "documents"),
    ):
        answer = server.post(path, body)
        assert answer.status_code == 413, answer.text
        error = answer.json()["error"]
        assert (error["code"], error["param"]) == ("text_too_long", param), error
        assert f"at most {MINILM_TEXT_CHARACTERS} per text" in error["message"]
    assert (
        "input at position(s) 1 holds 32769 characters"
        in server.post("/v1/embeddings", {"input": ["fine", longest]}).json()["error"]["message"]
    )
    just = "w " * (MINILM_TEXT_CHARACTERS // 2)  # at the limit: embedded (and truncated)
    assert server.post("/v1/embeddings", {"input": [just]}).status_code == 200


def test_huge_requests_are_refused_at_once_while_small_ones_keep_going(minilm_server: ServerProcess) -> None:
    """The issue's case: one 64 MB string used to be tokenised in full (no answer in 120 s). Sent at
    the same time as small requests: the big ones get 413 at once, the small ones their vectors."""
    huge = json.dumps({"input": "a " * (32 * 1024 * 1024)}).encode()  # 64 MB, over the 16 MiB default
    long = {"input": "word " * 400_000}  # 2 MB: under the body limit, 2,000,000 characters in one text
    timings: dict[str, float] = {}

    def timed(name: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        start = time.monotonic()
        answer = send()
        timings[name] = time.monotonic() - start
        return answer

    sent = [0]
    with ThreadPoolExecutor(max_workers=11) as pool:
        smalls = [
            pool.submit(
                timed, f"small {i}", lambda i=i: minilm_server.post("/v1/embeddings", {"input": f"q {i}"})
            )
            for i in range(8)
        ]
        big = pool.submit(
            timed, "64 MB, Content-Length", lambda: post_bytes(minilm_server, "/v1/embeddings", huge)
        )
        chunked = pool.submit(
            timed,
            "64 MB, chunked",
            lambda: post_bytes(minilm_server, "/v1/embeddings", chunks(len(huge), sent)),
        )
        one_text = pool.submit(
            timed, "one 2M-character text", lambda: minilm_server.post("/v1/embeddings", long)
        )
        answers = [small.result(timeout=120) for small in smalls]
        refused = [big.result(timeout=120), chunked.result(timeout=120), one_text.result(timeout=120)]
    print("seconds to answer:", {name: round(seconds, 3) for name, seconds in sorted(timings.items())})
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    codes = [answer.json()["error"]["code"] for answer in refused]
    assert [a.status_code for a in refused] == [413] * 3 and codes == ["body_too_large"] * 2 + [
        "text_too_long"
    ]
    assert sent[0] < len(huge) // 2, sent
    # Generous bounds (a shared 2-core machine): refusing costs no tokenisation, and waits for none.
    assert max(timings[name] for name in ("64 MB, Content-Length", "64 MB, chunked")) < 30, timings
    assert timings["one 2M-character text"] < 30 and max(timings.values()) < 60, timings


def test_a_full_queue_answers_503_with_retry_after(restricted_server: Callable[[], ServerProcess]) -> None:
    server = restricted_server()
    busy = ThreadPoolExecutor(max_workers=12)
    encoded = server.metric("qzhou_batch_texts_sum")
    slow = busy.submit(server.post, "/v1/embeddings", {"input": long_texts(15)})
    deadline = time.monotonic() + 30
    while server.metric("qzhou_batch_texts_sum") < encoded + 15 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the slow request is with the model
    answers = list(busy.map(lambda i: server.post("/v1/embeddings", {"input": f"q {i}"}), range(10)))
    assert slow.result(timeout=60).status_code == 200
    busy.shutdown()
    statuses = sorted(answer.status_code for answer in answers)
    assert 200 in statuses and 503 in statuses, statuses
    full = next(answer for answer in answers if answer.status_code == 503)
    assert full.headers["Retry-After"] == "1" and full.json()["error"]["code"] == "queue_full"
    assert "--max-queue" in full.json()["error"]["message"]
    assert server.post("/v1/embeddings", {"input": "after"}).status_code == 200


def test_sigterm_lets_the_request_in_flight_finish(
    restricted_server: Callable[[], ServerProcess], minilm: Encoder
) -> None:
    server = restricted_server()
    texts = long_texts(15)
    encoded = server.metric("qzhou_batch_texts_sum")
    done: dict[str, Any] = {}

    def send() -> None:
        done["answer"] = server.post("/v1/embeddings", {"input": texts})
        done["at"] = time.monotonic()

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 30
    while server.metric("qzhou_batch_texts_sum") < encoded + 15 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the request is with the model
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    sender.join(timeout=120)
    assert done["answer"].status_code == 200, done["answer"].text
    assert done["at"] > signalled  # it really was in flight when the signal came
    assert_same_vectors(rows_of(done["answer"].json()), minilm.encode_documents(texts))
    # uvicorn re-raises the signal once it has shut down cleanly, as process managers expect.
    assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Finished server process" in server.log_tail()


def test_a_model_that_cannot_load_stops_the_server_with_its_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    server = launch(str(missing), tmp_path / "server.log")
    try:
        assert server.process.wait(timeout=STARTUP_SECONDS) == 1
        assert f"could not load '{missing}'" in server.log_tail()
    finally:
        stop(server)


def test_options_defaults_and_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from qzhou_plugins.server import add_server_arguments, serve_from_arguments
    from qzhou_plugins.server.options import settings_from_arguments

    parser = add_server_arguments(argparse.ArgumentParser())
    monkeypatch.delenv("QZHOU_API_KEY", raising=False)
    settings = settings_from_arguments(parser.parse_args(["--model", "m"]))
    assert (settings.host, settings.port, settings.api_key, settings.batching) == (
        "127.0.0.1",
        8000,
        None,
        True,
    )
    assert (settings.name, settings.query_name) == ("m", "m-query")
    monkeypatch.setenv("QZHOU_API_KEY", "from-the-environment")
    assert settings_from_arguments(parser.parse_args([])).api_key == "from-the-environment"
    assert settings_from_arguments(parser.parse_args(["--api-key", "given"])).api_key == "given"
    assert settings_from_arguments(parser.parse_args(["--no-batching"])).batching is False
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert settings_from_arguments(parser.parse_args(["--max-body-bytes", "1000"])).max_body_bytes == 1000
    assert serve_from_arguments(parser.parse_args(["--device", "nonsense"])) == 2  # before any loading
