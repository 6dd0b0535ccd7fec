"""Token-budget batching: the budget is respected, order restored, long texts and OOM handled."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from qzhou_plugins import Encoder
from qzhou_plugins.backends.local.batching import padding_share, plan_batches


def test_plan_respects_the_budget_and_covers_every_text_once() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(1, 400) for _ in range(1000)]
    batches = plan_batches(lengths, 2048)
    assert sorted(p for batch in batches for p in batch) == list(range(1000))
    for batch in batches:
        assert len(batch) * max(lengths[p] for p in batch) <= 2048
    assert padding_share(lengths, batches) < 0.05


def test_a_large_budget_does_not_mix_very_different_lengths() -> None:
    lengths = [400] * 10 + [300] * 10 + [20] * 100
    batches = plan_batches(lengths, 1_000_000)
    assert padding_share(lengths, batches) == 0.0
    assert sorted(len(batch) for batch in batches) == [10, 10, 100]
    # Below min_batch_tokens, a few padded positions are cheaper than another forward pass.
    assert len(plan_batches([30, 25, 20], 1_000_000)) == 1


def test_a_text_longer_than_the_budget_gets_a_batch_of_its_own() -> None:
    batches = plan_batches([5, 900, 7], 100)
    assert [900] in [[[5, 900, 7][p] for p in b] for b in batches]
    with pytest.raises(ValueError, match="token_budget must be positive"):
        plan_batches([1], 0)


def test_order_is_restored_whatever_the_budget(tiny_qzhou_path: str) -> None:
    texts = [("word " * n).strip() for n in (40, 3, 17, 1, 60, 8, 25)]
    reference = np.stack([Encoder(model=tiny_qzhou_path).encode([t])[0] for t in texts])
    for budget in (1, 30, 200, 10_000):
        vectors = Encoder(model=tiny_qzhou_path, batch_tokens=budget).encode(texts)
        assert np.abs(vectors - reference).max() < 1e-5


def test_out_of_memory_splits_the_batch_and_retries(
    tiny_qzhou_path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = Encoder(model=tiny_qzhou_path, batch_tokens=100_000)
    texts = [f"text number {i} about the sea" for i in range(10)]
    expected = encoder.encode(texts)
    real_forward = encoder.backend._forward
    sizes: list[int] = []

    def forward_that_fits_three(batch: list[list[int]]) -> np.ndarray:
        sizes.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(batch)

    monkeypatch.setattr(encoder.backend, "_forward", forward_that_fits_three)
    with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
        vectors = encoder.encode(texts)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert sizes[0] == 10 and max(s for s in sizes if s <= 3) <= 3
    assert "Out of memory on a batch of 10 texts" in caplog.text


def test_out_of_memory_on_a_single_text_is_a_clear_error(
    tiny_qzhou_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qzhou_plugins import EncoderOutOfMemoryError

    encoder = Encoder(model=tiny_qzhou_path)

    def never_fits(batch: list[list[int]]) -> np.ndarray:
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(encoder.backend, "_forward", never_fits)
    with pytest.raises(EncoderOutOfMemoryError, match=r"a single text of .* tokens does not fit"):
        encoder.encode(["one text"])


def test_truncation_is_reported_once_with_counts(
    tiny_qzhou_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = Encoder(model=tiny_qzhou_path, max_length=16)
    with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
        vectors = encoder.encode(["short", "long " * 50, "longer " * 80])
    assert vectors.shape == (3, 64)
    messages = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert messages == [
        "2 of 3 texts were longer than 16 tokens and were truncated to 16 tokens (instruction included); "
        "raise max_length (this model allows up to 32768) to keep more."
    ]
