"""bf16 where the processor computes it: the deciding function with both answers, and the vectors and
scores of the bf16 path against fp32.

This machine may have no bf16 instructions: the bf16 path is then taken by
``QZHOU_PLUGINS_CPU_BF16=1`` (emulated, several times slower than fp32 there), so the texts are few.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from qzhou_plugins import Encoder
from qzhou_plugins.backends.local.precision import (
    CPU_BF16_VARIABLE,
    Precision,
    cpu_computes_bf16,
    pick_precision,
)
from qzhou_plugins.config import DEMO_MODEL
from qzhou_plugins.rerank import Reranker

CPU = torch.device("cpu")
TEXTS = [
    "Green tea is brewed at 70-80 °C for two to three minutes.",
    "Black tea wants boiling water and four minutes.",
    "Oolong sits between green and black tea in oxidation.",
    "The tea plant, Camellia sinensis, grows best on misty slopes.",
    "Matcha is shade-grown green tea ground to a fine powder and whisked, not steeped.",
    "绿茶用八十度左右的水冲泡。",
    "Puerh is fermented and aged, sometimes for decades, in pressed cakes.",
    "Water that is too hot draws bitter catechins out of delicate leaves.",
]


def test_auto_on_a_cpu_with_bf16_computes_in_bf16_over_fp32_weights() -> None:
    precision = pick_precision("auto", CPU, cpu_has_bf16=lambda: True)
    assert precision == Precision(torch.float32, torch.bfloat16, "cpu")
    assert precision.autocast
    assert precision.name == "bfloat16"
    assert precision.describe() == "bfloat16 (autocast over float32 weights)"


def test_auto_on_a_cpu_without_bf16_stays_fp32() -> None:
    precision = pick_precision("auto", CPU, cpu_has_bf16=lambda: False)
    assert precision == Precision(torch.float32, torch.float32, "cpu")
    assert not precision.autocast
    assert precision.describe() == "float32"


@pytest.mark.parametrize("requested", ["float32", "bfloat16", "float16"])
def test_an_explicit_dtype_is_honoured_whatever_the_cpu_has(requested: str) -> None:
    for has_bf16 in (True, False):
        precision = pick_precision(requested, CPU, cpu_has_bf16=lambda has=has_bf16: has)
        assert precision.weights == precision.compute == getattr(torch, requested)


def test_the_variable_overrides_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_BF16_VARIABLE, "1")
    assert cpu_computes_bf16() is True
    monkeypatch.setenv(CPU_BF16_VARIABLE, "0")
    assert cpu_computes_bf16() is False
    monkeypatch.delenv(CPU_BF16_VARIABLE)
    probes = (torch.cpu._is_avx512_bf16_supported(), torch.cpu._is_amx_tile_supported())
    assert cpu_computes_bf16() is any(probes)


def _bf16_and_fp32(monkeypatch: pytest.MonkeyPatch, model: str) -> tuple[Encoder, Encoder]:
    monkeypatch.setenv(CPU_BF16_VARIABLE, "1")
    return Encoder(model=model, device="cpu"), Encoder(model=model, device="cpu", dtype="float32")


@pytest.mark.parametrize(("which", "floor"), [("minilm", 0.9999), ("tiny_qzhou", 0.999)])
def test_bf16_vectors_stay_close_to_fp32(
    monkeypatch: pytest.MonkeyPatch, which: str, floor: float, tiny_qzhou_path: str
) -> None:
    """MiniLM's trained weights keep cosine 0.9999 (0.99997 on 200 SciFact abstracts); the tiny QZhou's
    random weights, whose mean-pooled states are mostly noise that bf16 rounding moves, keep 0.9994
    (benchmarks/bench_encode.py --precision measures each family's shape)."""
    model = DEMO_MODEL if which == "minilm" else tiny_qzhou_path
    bf16, fp32 = _bf16_and_fp32(monkeypatch, model)
    assert bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    assert bf16.backend.loaded is fp32.backend.loaded  # one copy of the fp32 weights serves both
    assert bf16.facts.fingerprint["dtype"] == "bfloat16"
    assert bf16.facts.runtime == "cpu, bfloat16 (autocast over float32 weights)"
    assert fp32.facts.runtime == "cpu, float32"
    assert "autocast over float32 weights" in repr(bf16.backend)
    for encode in ("encode_queries", "encode_documents"):
        low, full = getattr(bf16, encode)(TEXTS), getattr(fp32, encode)(TEXTS)
        assert low.dtype == np.float32
        cosines = np.sum(low * full, axis=1)
        assert cosines.min() >= floor, cosines
        assert not np.array_equal(low, full)  # the bf16 path really ran


@pytest.mark.parametrize("which", ["tiny_cross_encoder_path", "tiny_llm_reranker_path"])
def test_bf16_rerankers_keep_the_order_of_fp32(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, which: str
) -> None:
    model = request.getfixturevalue(which)
    monkeypatch.setenv(CPU_BF16_VARIABLE, "1")
    bf16 = Reranker(model=model, device="cpu")
    fp32 = Reranker(model=model, device="cpu", dtype="float32")
    assert bf16.facts.fingerprint["dtype"] == "bfloat16"
    assert bf16.facts.runtime == "cpu, bfloat16 (autocast over float32 weights)"
    query = "how hot should the water be for green tea"
    low = bf16.score_pairs([query] * len(TEXTS), TEXTS)
    full = fp32.score_pairs([query] * len(TEXTS), TEXTS)
    assert np.max(np.abs(low - full)) < 0.01
    # Every two candidates that fp32 separates by more than bf16's error keep their order.
    separated = full[:, None] - full[None, :] > 0.01
    assert np.all((low[:, None] - low[None, :] > 0)[separated])


def test_a_collection_made_in_fp32_takes_bf16_queries_as_one_vector_family(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from qzhou_plugins.chroma import QZhouCollection

    made = QZhouCollection.open("tea", path=tmp_path, model=DEMO_MODEL, dtype="float32")
    made.add(TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))])
    monkeypatch.setenv(CPU_BF16_VARIABLE, "1")
    # A batch budget no other test uses: a shared encoder of its own, made now, on the bf16 path (the
    # precision is chosen when an encoder is made; the session's shared ones were made in fp32).
    reopened = QZhouCollection.open("tea", path=tmp_path, dtype="auto", batch_tokens=2048)
    assert reopened.encoder.dtype == torch.bfloat16
    assert reopened.count() == len(TEXTS)
    [result] = reopened.query("water temperature for green tea", n_results=2)
    assert result.hits[0].id == "t0"


def test_an_evaluation_says_where_and_in_what_precision_it_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    from qzhou_plugins.evaluation import SentencePair, evaluate_sts

    monkeypatch.setenv(CPU_BF16_VARIABLE, "1")
    pairs = [SentencePair(TEXTS[i], TEXTS[i + 1], float(i)) for i in range(4)]
    result = evaluate_sts(Encoder(model=DEMO_MODEL, device="cpu"), pairs)
    assert result.runtime == "cpu, bfloat16 (autocast over float32 weights)"
    assert '"runtime": "cpu, bfloat16' in result.to_json()
