"""Bad input at the core's seam: each defect a new user hit gets a clear error naming it, or the
right result. Every edge (adapters, Chroma, CLI) goes through the same validation, so these tests pin
the words and positions once; the edges' own tests check that they reach it."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from qzhou_plugins import DEMO_MODEL, Encoder, EncoderConfig, ModelLoadError, Task
from qzhou_plugins.rerank import rank, rerank, score_candidates

INVISIBLE = ["\u200b\u200b", "\ufeff", "\x00\x00\x00", "\x01\x02", "\u200d \u2060", "\ufeff\u200b\n"]


@pytest.mark.parametrize("text", INVISIBLE)
def test_text_with_no_visible_content_is_refused_with_its_position(minilm: Encoder, text: str) -> None:
    for method in (minilm.encode, minilm.encode_queries, minilm.encode_documents):
        with pytest.raises(ValueError, match=r"visible content: position\(s\) 1 "):
            method(["a real sentence", text])


def test_punctuation_emoji_and_other_scripts_are_content(minilm: Encoder) -> None:
    texts = ["?", "🍵", "\u0645\u0631\u062d\u0628\u0627", "—", "\u200bword\u200b"]
    assert minilm.encode(texts).shape == (5, 384)


def test_a_lone_surrogate_is_named_with_its_position(minilm: Encoder) -> None:
    with pytest.raises(ValueError, match=r"lone surrogate .*'\\ud800', at character 3 of position 2"):
        minilm.encode(["ok", "fine", "abc\ud800def"])
    with pytest.raises(ValueError, match=r"position\(s\) 0 hold a lone surrogate"):
        minilm.encode_queries(["\ud800"])


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ({"a": 1, "b": 2}, "not a dict"),
        ({"a", "b"}, "not a set"),
        (b"bytes", "not a single bytes"),
        (None, "not NoneType"),
        (3.5, "not float"),
    ],
)
def test_containers_that_would_be_misread_are_refused(minilm: Encoder, texts: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        minilm.encode(texts)  # type: ignore[arg-type]


def test_a_generator_is_embedded_not_consumed_by_validation(minilm: Encoder) -> None:
    expected = minilm.encode_documents(["tea", "coffee"])
    got = minilm.encode_documents(text for text in ["tea", "coffee"])  # type: ignore[arg-type]
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("instruction", [5, 1.5, ["a"], b"bytes", True])
def test_a_non_string_instruction_is_refused_not_turned_into_text(
    minilm: Encoder, instruction: object
) -> None:
    with pytest.raises(TypeError, match="instruction must be a string or None"):
        minilm.encode(["tea"], instruction)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="query_instruction must be a string or None"):
        minilm.prefixes("retrieval", query_instruction=instruction)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="instruction must be a string or None"):
        Task(name="custom", instruction=instruction)  # type: ignore[arg-type]


def test_a_whitespace_only_instruction_is_refused(minilm: Encoder) -> None:
    with pytest.raises(ValueError, match="whitespace-only"):
        minilm.encode(["tea"], "   ")
    with pytest.raises(ValueError, match="document_instruction must not be whitespace-only"):
        minilm.prefixes(document_instruction="\n\t")
    assert minilm.prefixes(query_instruction="", document_instruction="") == ("", "")


def test_max_length_is_an_int_never_a_bool() -> None:
    with pytest.raises(ValueError, match="max_length"):
        EncoderConfig(model=DEMO_MODEL, max_length=True)
    with pytest.raises(ValueError, match="batch_tokens"):
        EncoderConfig(model=DEMO_MODEL, batch_tokens=4096.0)


def test_max_length_must_leave_room_for_text_after_the_special_tokens() -> None:
    with pytest.raises(ValueError, match=r"max_length=1 leaves no room for text: .* adds 2 special"):
        Encoder(model=DEMO_MODEL, max_length=1)
    assert Encoder(model=DEMO_MODEL, max_length=3).encode(["tea " * 50]).shape == (1, 384)


def test_max_length_over_the_position_limit_fails_at_construction() -> None:
    with pytest.raises(ValueError, match=r"max_length=513 exceeds .* \(512 positions\)"):
        Encoder(model=DEMO_MODEL, max_length=513)


def test_an_instruction_that_fills_max_length_is_an_error_not_identical_vectors(tiny_qzhou_path: str) -> None:
    encoder = Encoder(model=tiny_qzhou_path, max_length=12)
    with pytest.raises(ValueError, match=r"instruction alone takes \d+ tokens and max_length is 12"):
        encoder.encode_queries(["what is tea?", "how is coffee roasted?"], "retrieval")
    # Documents of an asymmetric task carry no instruction: they still work at this length.
    assert encoder.encode_documents(["what is tea?"], "retrieval").shape == (1, 64)


def test_a_text_of_mostly_unknown_tokens_is_reported(
    minilm: Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
        minilm.encode(["tea is a drink", "x" * 300])
    messages = [r.getMessage() for r in caplog.records if "unknown tokens" in r.getMessage()]
    # Named by its beginning: the positions the backend sees are of distinct texts, not the caller's.
    assert len(messages) == 1 and "1 of 2 texts" in messages[0] and "begins 'xxxxxxxx" in messages[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
        minilm.encode(["tea is a drink", "green tea and black tea"])
    assert "unknown tokens" not in caplog.text


def test_a_long_unknown_word_after_a_prefix_is_reported(
    minilm: Encoder, minilm_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After an instruction the one unknown token of a 101-character word is a small share of the
    tokens, yet the vector is the instruction's alone, the same for every such text: it is reported
    by the characters it stands for. One unknown character in a sentence is not."""
    prefix = "Represent this sentence for searching relevant passages: "
    for text in ("\U0001f375" * 101, "y" * 120):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
            minilm.encode_with_prefix([text, "green tea and black tea"], prefix)
        messages = [r.getMessage() for r in caplog.records if "unknown tokens" in r.getMessage()]
        assert len(messages) == 1 and "1 of 2 texts" in messages[0], messages
    caplog.clear()
    sentence = "green tea \u2603 and black tea are both drunk in winter"
    from tokenizers import Tokenizer

    tokens = Tokenizer.from_file(str(Path(minilm_path) / "tokenizer.json")).encode(sentence).tokens
    assert "[UNK]" in tokens  # the snowman is not in the vocabulary: the case is real
    with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
        minilm.encode_with_prefix([sentence], prefix)
    assert "unknown tokens" not in caplog.text


def test_devices_that_cannot_compute_are_refused() -> None:
    with pytest.raises(ValueError, match="device 'meta' holds no data"):
        EncoderConfig(model=DEMO_MODEL, device="meta")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(
            ModelLoadError, match=r"device 'cuda:7' is not available: this machine has no CUDA"
        ):
            Encoder(model=DEMO_MODEL, device="cuda:7")


def test_flash_attention_without_its_package_names_the_package() -> None:
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ModelLoadError, match="needs the flash-attn package"):
        Encoder(model=DEMO_MODEL, attn_implementation="flash_attention_2")


def test_an_encoder_accepts_a_mapping_and_a_path(minilm_path: str) -> None:
    assert Encoder({"model": DEMO_MODEL}).dimension == 384
    config = EncoderConfig(model=Path(minilm_path))
    assert config.model == minilm_path and isinstance(config.model, str)
    assert Encoder(model=Path(minilm_path)).config.model == minilm_path
    with pytest.raises(TypeError, match="not list"):
        Encoder([DEMO_MODEL])  # type: ignore[arg-type]


def test_rerank_options_are_checked(minilm: Encoder) -> None:
    with pytest.raises(TypeError, match="top_n must be an int or None, not bool"):
        rerank(minilm, "tea", ["green tea", "coffee"], top_n=True)
    with pytest.raises(ValueError, match="threshold must be a finite number, not nan"):
        rerank(minilm, "tea", ["green tea", "coffee"], threshold=math.nan)
    with pytest.raises(ValueError, match="empty must be one of error, lowest, not 'skip'"):
        score_candidates(minilm, "tea", ["green tea"], empty="skip")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="candidates must be a list of strings, not a single str"):
        score_candidates(minilm, "tea", "green tea")


def test_empty_candidates_score_lowest_but_a_surrogate_is_still_an_error(minilm: Encoder) -> None:
    scores = score_candidates(minilm, "tea", ["green tea", "\u200b", None, "coffee"], empty="lowest")
    assert scores[1] == scores[2] == -1.0 and scores[0] > scores[3] > -1.0
    with pytest.raises(ValueError, match=r"position\(s\) 2 hold a lone surrogate"):
        score_candidates(minilm, "tea", ["green tea", "", "bad\udc00"], empty="lowest")


def test_rank_is_stable_and_cuts() -> None:
    ranked = rank([0.1, 0.5, 0.5, 0.9], top_n=3, threshold=0.2)
    assert [(r.index, r.score) for r in ranked] == [(3, 0.9), (1, 0.5), (2, 0.5)]
    assert [r.index for r in rank(np.array([0.3, 0.1]), top_n=0)] == []


def test_a_hub_id_is_resolved_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from qzhou_plugins.backends.local import loading

    calls: list[str] = []
    real = loading._resolve

    def counting(model: str) -> Path:
        calls.append(model)
        return real(model)

    monkeypatch.setattr(loading, "_hub_paths", {})
    monkeypatch.setattr(loading, "_resolve", counting)
    for batch_tokens in (100, 200, 300):
        Encoder(model=DEMO_MODEL, batch_tokens=batch_tokens)
    assert calls == [DEMO_MODEL]
