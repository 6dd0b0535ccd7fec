"""Reference parity on real weights: our Encoder against sentence-transformers on all-MiniLM-L6-v2."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import document_text
from qzhou_plugins import Encoder


@pytest.fixture(scope="module")
def parity_texts(scifact_corpus: list[dict[str, str]], stsb_zh_sentences: list[str]) -> list[str]:
    """SciFact abstracts (many longer than the model's 256 tokens) mixed with short Chinese sentences."""
    return [document_text(d) for d in scifact_corpus[:60]] + stsb_zh_sentences[:60]


@pytest.fixture(scope="module")
def reference_vectors(minilm_path: str, parity_texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path, device="cpu")
    return np.asarray(model.encode(parity_texts, batch_size=32, normalize_embeddings=True))


ONE_BY_ONE = [*range(0, 60, 4), *range(60, 120, 4)]
"""The texts of the one-text-per-pass run: a quarter of each kind (it makes a forward pass per text)."""


@pytest.mark.parametrize(("batch_tokens", "shuffled"), [(1, False), (700, True), (16384, True)])
def test_minilm_matches_sentence_transformers(
    minilm_path: str,
    parity_texts: list[str],
    reference_vectors: np.ndarray,
    batch_tokens: int,
    shuffled: bool,
) -> None:
    """A budget under any text's length (each text alone), a mid one and one that takes them all."""
    order = list(range(len(parity_texts))) if batch_tokens > 1 else list(ONE_BY_ONE)
    if shuffled:
        random.Random(7).shuffle(order)
    encoder = Encoder(model=minilm_path, batch_tokens=batch_tokens)
    ours = encoder.encode_documents([parity_texts[i] for i in order])
    assert ours.dtype == np.float32 and ours.shape == (len(order), 384)
    cosines = np.sum(ours * reference_vectors[order], axis=1)
    assert cosines.min() >= 0.99999, f"worst text {order[int(cosines.argmin())]}: cosine {cosines.min()}"


def test_minilm_uses_its_own_sentence_transformers_settings(minilm_path: str) -> None:
    encoder = Encoder(model=minilm_path)
    assert encoder.family == "bert"
    assert encoder.max_length == 256  # sentence_bert_config.json, not BERT's 512
    assert encoder.pooling == "mean"  # 1_Pooling/config.json
    assert encoder.prefixes() == ("", "")
    assert encoder.prefixes("sts") == ("", "")  # not trained with task instructions


def test_demo_alias_is_the_packaged_model(minilm_path: str) -> None:
    by_alias = Encoder(model="all-MiniLM-L6-v2")
    by_path = Encoder(model=minilm_path)
    texts = ["The alias must give the very same vectors."]
    np.testing.assert_allclose(by_alias.encode(texts), by_path.encode(texts), atol=1e-6)
