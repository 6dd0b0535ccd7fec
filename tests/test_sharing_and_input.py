"""One model per process, safe concurrent use, and bad input refused before any model work."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from qzhou_plugins import Encoder, loaded_models

TEXTS = [f"sentence {i}: " + "tides and moons " * (i % 9) for i in range(40)]


def test_shared_returns_one_instance_and_weights_load_once(tiny_qzhou_path: str) -> None:
    first = Encoder.shared(model=tiny_qzhou_path)
    assert Encoder.shared(model=tiny_qzhou_path) is first
    other_options = Encoder.shared(model=tiny_qzhou_path, batch_tokens=64)
    assert other_options is not first
    assert other_options.backend.loaded is first.backend.loaded  # other encode options, same weights
    loaded = len(loaded_models())
    Encoder(model=tiny_qzhou_path, max_length=128)
    Encoder.shared(model=tiny_qzhou_path, show_progress=False)
    assert len(loaded_models()) == loaded  # new encoders of loaded weights load nothing


def test_eight_threads_match_sequential_results(tiny_qzhou_path: str) -> None:
    encoder = Encoder.shared(model=tiny_qzhou_path, batch_tokens=256)
    sequential = [encoder.encode_queries(TEXTS[i::8]) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda i: encoder.encode_queries(TEXTS[i::8]), range(8)))
    for expected, got in zip(sequential, threaded, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-6)


async def test_two_hundred_asyncio_tasks_match_sequential_results(tiny_qzhou_path: str) -> None:
    encoder = Encoder.shared(model=tiny_qzhou_path)
    sequential = [encoder.encode_documents([TEXTS[i % len(TEXTS)]]) for i in range(200)]
    concurrent = await asyncio.gather(
        *(encoder.aencode_documents([TEXTS[i % len(TEXTS)]]) for i in range(200))
    )
    for expected, got in zip(sequential, concurrent, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_empty_list_gives_an_empty_matrix(tiny_qzhou_path: str) -> None:
    encoder = Encoder.shared(model=tiny_qzhou_path)
    for method in (encoder.encode, encoder.encode_queries, encoder.encode_documents):
        result = method([])
        assert result.shape == (0, 64) and result.dtype == np.float32


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        (["ok", None, "fine", None], TypeError, r"None at position\(s\) 1, 3"),
        (["ok", 5, b"bytes"], TypeError, r"non-string \(bytes, int\) at position\(s\) 1, 2"),
        (["ok", "", "  \n\t"], ValueError, r"empty or whitespace-only: position\(s\) 1, 2"),
        ("a single string", TypeError, "must be a list of strings, not a single str"),
        (42, TypeError, "must be a list of strings, not int"),
        ([""] * 15, ValueError, r"position\(s\) 0, 1, .*, 9, \.\.\. \(15 in all\)"),
    ],
)
def test_bad_input_is_refused_before_model_work(
    tiny_qzhou_path: str, monkeypatch: pytest.MonkeyPatch, texts: object, error: type, message: str
) -> None:
    encoder = Encoder.shared(model=tiny_qzhou_path)

    def no_model_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model ran on bad input")

    monkeypatch.setattr(encoder.backend, "embed", no_model_work)
    monkeypatch.setattr(encoder.backend, "tokenize", no_model_work)
    for method in (encoder.encode, encoder.encode_queries, encoder.encode_documents):
        with pytest.raises(error, match=message):
            method(texts)  # type: ignore[arg-type]


def test_iterables_and_tuples_are_accepted(tiny_qzhou_path: str) -> None:
    encoder = Encoder.shared(model=tiny_qzhou_path)
    expected = encoder.encode(["a", "b"])
    np.testing.assert_allclose(encoder.encode(("a", "b")), expected, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(iter(["a", "b"])), expected, atol=1e-6)  # type: ignore[arg-type]


def test_config_and_options_are_not_mixed(tiny_qzhou_path: str) -> None:
    from qzhou_plugins import EncoderConfig

    with pytest.raises(TypeError, match="not both"):
        Encoder(EncoderConfig(model=tiny_qzhou_path), batch_tokens=5)
    with pytest.raises(ValueError, match="batch_tokens"):
        EncoderConfig(model=tiny_qzhou_path, batch_tokens=0)
    with pytest.raises(ValueError, match="not a torch device"):
        EncoderConfig(model=tiny_qzhou_path, device="tpu:9")
