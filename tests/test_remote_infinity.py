"""Our remote backend against a real third-party server: Infinity serving all-MiniLM-L6-v2 on CPU.

Infinity knows nothing of our instructions: the client puts them in front of the texts, so the
vectors through the server equal the ones computed here. It runs from a venv of its own (built once,
see tests/servers.py) because it pins transformers<5 and numpy<2; the process (conftest's
``infinity_url``) also serves the tiny cross-encoder of tests/test_remote_rerank.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from qzhou_plugins import DEMO_MODEL, Encoder, Task

TEXTS = [
    "Green tea is steamed or pan-fired soon after picking.",
    "Black tea leaves are fully oxidised before drying.",
    "Matcha is stone-ground shade-grown tea.",
    "Water just off the boil scorches delicate leaves.",
    "绿茶的冲泡水温一般在八十度左右。",
]


@pytest.fixture(scope="module")
def local() -> Encoder:
    return Encoder.shared(model=DEMO_MODEL)


@pytest.fixture(scope="module")
def remote(infinity_url: str) -> Encoder:
    return Encoder(model=DEMO_MODEL, base_url=infinity_url)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape and got.dtype == np.float32
    cosines = np.sum(got * expected, axis=1)
    assert cosines.min() >= 0.99999, cosines


def test_the_served_model_is_described_by_a_probe(remote: Encoder) -> None:
    assert remote.dimension == 384 and remote.model_name == DEMO_MODEL
    assert remote.facts.fingerprint["backend"] == "remote"


def test_remote_vectors_equal_local_ones_on_both_sides(remote: Encoder, local: Encoder) -> None:
    assert_same(remote.encode_documents(TEXTS), local.encode_documents(TEXTS))
    assert_same(remote.encode_queries(TEXTS[:2]), local.encode_queries(TEXTS[:2]))


def test_instructions_are_applied_by_our_client(remote: Encoder, local: Encoder) -> None:
    instruction = "Represent this sentence for searching relevant passages: "
    assert_same(remote.encode(TEXTS, instruction), local.encode(TEXTS, instruction))
    task = Task(name="custom", instruction="Find tea facts: ", both_sides=True)
    assert_same(remote.encode_documents(TEXTS, task), local.encode_documents(TEXTS, task))
    plain = remote.encode_documents(TEXTS[:1])
    assert float(plain[0] @ remote.encode(TEXTS[:1], instruction)[0]) < 0.999  # it did change the input


def test_a_large_input_is_split_into_requests_in_order(remote: Encoder, local: Encoder) -> None:
    texts = [f"{TEXTS[i % len(TEXTS)]} (note {i})" for i in range(300)]
    assert_same(remote.encode_documents(texts), local.encode_documents(texts))


async def test_async_calls_go_out_concurrently_and_match(remote: Encoder, local: Encoder) -> None:
    texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(60)]
    results = await asyncio.gather(*(remote.aencode_documents([text]) for text in texts))
    assert_same(np.concatenate(results), local.encode_documents(texts))


def test_invalid_input_is_refused_before_any_request(remote: Encoder) -> None:
    with pytest.raises(ValueError, match=r"visible content: position\(s\) 1"):
        remote.encode_documents(["tea", "\u200b"])


def test_the_cache_works_over_a_served_model(infinity_url: str, tmp_path: Path, local: Encoder) -> None:
    pytest.importorskip("diskcache")
    cached = Encoder(model=DEMO_MODEL, base_url=infinity_url, cache_dir=str(tmp_path))
    first = cached.encode_documents(TEXTS)
    assert cached.cache.misses == len(TEXTS)
    assert_same(cached.encode_documents(TEXTS), first)
    assert cached.cache.hits == len(TEXTS)
    assert_same(first, local.encode_documents(TEXTS))
