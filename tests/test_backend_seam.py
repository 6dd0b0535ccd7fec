"""The seam is real: a backend written here, touching neither the encoder nor any adapter, serves
the encoder, reranking, the embedding cache and the framework adapters."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pytest

from qzhou_plugins import Backend, BackendFacts, Encoder
from qzhou_plugins.instructions import QZHOU_PROMPT_STYLE
from qzhou_plugins.rerank import rerank

DIMENSION = 32


class HashingBackend:
    """Bag-of-words vectors from hashed words: deterministic, sensitive to every word of the text."""

    def __init__(self, normalized: bool = True) -> None:
        self.calls: list[list[str]] = []
        self._facts = BackendFacts(
            model="hashing-test-model",
            dimension=DIMENSION,
            max_length=64,
            position_limit=64,
            prompt_style=QZHOU_PROMPT_STYLE,
            family="qzhou",
            pooling="mean",
            normalized=normalized,
            fingerprint={"backend": "hashing", "normalized": str(normalized)},
        )

    @property
    def facts(self) -> BackendFacts:
        return self._facts

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self.calls.append(list(texts))
        rows = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                rows[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % DIMENSION] += 1.0
        if self._facts.normalized:
            rows /= np.linalg.norm(rows, axis=1, keepdims=True).clip(min=1e-12)
        return rows

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) for text in texts]


def test_the_test_backend_satisfies_the_protocol() -> None:
    assert isinstance(HashingBackend(), Backend)


def test_the_encoder_applies_sides_and_keeps_order_through_any_backend() -> None:
    backend = HashingBackend()
    encoder = Encoder(backend=backend)
    query_prefix, document_prefix = encoder.prefixes("retrieval")
    assert query_prefix.startswith("Instruct: ") and document_prefix == ""
    queries = encoder.encode_queries(["green tea", "black tea"])
    assert backend.calls[-1] == [query_prefix + "green tea", query_prefix + "black tea"]
    encoder.encode_documents(["green tea"])
    assert backend.calls[-1] == ["green tea"]
    np.testing.assert_array_equal(
        queries, backend.embed([query_prefix + "green tea", query_prefix + "black tea"])
    )
    assert encoder.dimension == DIMENSION and encoder.model_name == "hashing-test-model"
    assert encoder.device is None  # a backend without a torch device


def test_validation_happens_above_the_seam() -> None:
    backend = HashingBackend()
    encoder = Encoder(backend=backend)
    with pytest.raises(ValueError, match=r"position\(s\) 1"):
        encoder.encode_documents(["tea", "\u200b"])
    assert backend.calls == []


def test_an_instruction_longer_than_max_length_is_refused_by_the_backend_count() -> None:
    encoder = Encoder(backend=HashingBackend())
    with pytest.raises(ValueError, match="instruction alone takes"):
        encoder.encode(["tea"], "word " * 70)


def test_rerank_normalises_the_rows_of_a_backend_that_does_not() -> None:
    encoder = Encoder(backend=HashingBackend(normalized=False))
    ranked = rerank(encoder, "green tea", ["green tea leaves", "coffee beans roasted dark", "green"])
    assert ranked[0].index == 0 and all(-1.0 <= r.score <= 1.0 + 1e-6 for r in ranked)


def test_the_cache_serves_repeated_texts_and_misses_on_a_new_instruction(tmp_path: object) -> None:
    pytest.importorskip("diskcache")
    backend = HashingBackend()
    encoder = Encoder(backend=backend, cache_dir=str(tmp_path))
    first = encoder.encode_queries(["green tea", "black tea", "green tea"])
    assert backend.calls[-1] == [encoder.prefixes()[0] + "green tea", encoder.prefixes()[0] + "black tea"]
    calls = len(backend.calls)
    again = Encoder(backend=backend, cache_dir=str(tmp_path)).encode_queries(["black tea", "green tea"])
    assert len(backend.calls) == calls  # served from disk, in a new encoder
    np.testing.assert_array_equal(again, first[[1, 0]])
    encoder.encode_queries(["green tea"], "sts")
    assert len(backend.calls) == calls + 1  # another instruction is another key
    other = Encoder(backend=HashingBackend(normalized=False), cache_dir=str(tmp_path))
    other.encode_queries(["green tea"])
    assert len(other.backend.calls) == 1  # another fingerprint is another key


def test_the_langchain_adapter_runs_on_the_test_backend() -> None:
    pytest.importorskip("langchain_core")
    from qzhou_plugins.langchain import QZhouEmbeddings

    encoder = Encoder(backend=HashingBackend())
    embeddings = QZhouEmbeddings(encoder=encoder)
    np.testing.assert_allclose(embeddings.embed_query("green tea"), encoder.encode_queries(["green tea"])[0])
    np.testing.assert_allclose(embeddings.embed_documents(["tea"]), encoder.encode_documents(["tea"]))


def test_the_llama_index_adapter_runs_on_the_test_backend() -> None:
    pytest.importorskip("llama_index.core")
    from qzhou_plugins.llama_index import QZhouEmbedding

    encoder = Encoder(backend=HashingBackend())
    embed_model = QZhouEmbedding(encoder=encoder)
    np.testing.assert_allclose(
        embed_model.get_query_embedding("green tea"), encoder.encode_queries(["green tea"])[0]
    )
    np.testing.assert_allclose(
        embed_model.get_text_embedding_batch(["tea", "coffee"]), encoder.encode_documents(["tea", "coffee"])
    )


def test_each_distinct_text_is_embedded_once_and_equal_texts_get_equal_rows() -> None:
    backend = HashingBackend()
    encoder = Encoder(backend=backend)
    texts = ["green tea", "black tea", "green tea", "oolong", "black tea"]
    rows = encoder.encode_documents(texts)
    assert backend.calls[-1] == ["green tea", "black tea", "oolong"]  # first-seen order
    assert rows.shape == (5, DIMENSION)
    np.testing.assert_array_equal(rows[[2, 4]], rows[[0, 1]])  # the very same row, by construction
    np.testing.assert_array_equal(rows, backend.embed(texts))
    # Equal texts with different prefixes are different texts for the model.
    encoder.encode_with_prefix(["tea", "tea"], ["a ", "b "])
    assert backend.calls[-1] == ["a tea", "b tea"]


async def test_the_async_path_embeds_each_distinct_text_once_too() -> None:
    class AsyncHashingBackend(HashingBackend):
        async def aembed(self, texts: Sequence[str]) -> np.ndarray:
            return self.embed(texts)

    backend = AsyncHashingBackend()
    rows = await Encoder(backend=backend).aencode_documents(["tea", "coffee", "tea"])
    assert backend.calls[-1] == ["tea", "coffee"]
    np.testing.assert_array_equal(rows[2], rows[0])


@pytest.mark.parametrize("flag", ["x", "no", 1, 0.0, [True]])
async def test_show_progress_must_be_a_bool_or_none(flag: object) -> None:
    encoder = Encoder(backend=HashingBackend())
    with pytest.raises(TypeError, match=r"show_progress must be True, False or None, not"):
        encoder.encode(["tea"], show_progress=flag)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"show_progress must be True, False or None, not"):
        await encoder.aencode(["tea"], show_progress=flag)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="show_progress"):
        Encoder(backend=HashingBackend(), show_progress=flag)
