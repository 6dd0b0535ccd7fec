"""The QZhou path on tiny random checkpoints: loading without remote code, bidirectional attention,
left padding with correct positions, and refusal of broken checkpoints."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

from qzhou_plugins import Encoder, ModelLoadError
from qzhou_plugins.testing import QWEN25_FIRST_SPECIAL_ID, build_qzhou_checkpoint

TEXTS = [
    "What causes the seasons on Earth?",
    "地球的四季是由什么引起的？",
    "Axial tilt, not distance from the Sun, gives us summer and winter.",
    "短句。",
]
LONG_TEXT = " ".join(["The tilt of the axis changes how directly sunlight strikes each hemisphere."] * 12)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def reference_vector(checkpoint: Path, token_ids: list[int], *, causal: bool) -> np.ndarray:
    """Qwen2 written out by hand from the weights file: one text, no padding, mean pooling.

    Independent of transformers' modelling code and mask builders, so it checks what attention our
    loaded model really uses.
    """
    config = json.loads((checkpoint / "config.json").read_text())
    weights = _fp64_weights(checkpoint)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // heads
    eps = config["rms_norm_eps"]
    theta = config.get("rope_theta") or config["rope_parameters"]["rope_theta"]
    n = len(token_ids)
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(n, dtype=torch.float64), inv_freq)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    hidden = weights["embed_tokens.weight"][token_ids]
    for layer in range(config["num_hidden_layers"]):
        w = {
            k.split(f"layers.{layer}.", 1)[1]: v
            for k, v in weights.items()
            if k.startswith(f"layers.{layer}.")
        }
        x = _rms_norm(hidden, w["input_layernorm.weight"], eps)
        q = (x @ w["self_attn.q_proj.weight"].T + w["self_attn.q_proj.bias"]).view(n, heads, head_dim)
        k = (x @ w["self_attn.k_proj.weight"].T + w["self_attn.k_proj.bias"]).view(n, kv_heads, head_dim)
        v = (x @ w["self_attn.v_proj.weight"].T + w["self_attn.v_proj.bias"]).view(n, kv_heads, head_dim)
        q = q * cos[:, None] + _rotate_half(q) * sin[:, None]
        k = k * cos[:, None] + _rotate_half(k) * sin[:, None]
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(head_dim)
        if causal:
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        attended = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, -1)
        hidden = hidden + attended @ w["self_attn.o_proj.weight"].T
        x = _rms_norm(hidden, w["post_attention_layernorm.weight"], eps)
        gate = torch.nn.functional.silu(x @ w["mlp.gate_proj.weight"].T)
        hidden = hidden + (gate * (x @ w["mlp.up_proj.weight"].T)) @ w["mlp.down_proj.weight"].T
    pooled = _rms_norm(hidden, weights["norm.weight"], eps).mean(0)
    return (pooled / pooled.norm()).float().numpy()


@functools.cache
def _fp64_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights in float64, read once per test session (the vocabulary is 151k rows)."""
    return {
        k.removeprefix("model."): v.double() for k, v in load_file(checkpoint / "model.safetensors").items()
    }


@functools.cache
def _tokenizer(checkpoint: str) -> Any:
    return AutoTokenizer.from_pretrained(checkpoint)


def _token_ids(checkpoint: str, text: str) -> list[int]:
    return _tokenizer(checkpoint)(text)["input_ids"]


def test_loads_without_remote_code(tiny_qzhou_path: str) -> None:
    config = json.loads((Path(tiny_qzhou_path) / "config.json").read_text())
    assert config["architectures"] == ["QZhouModel"] and "auto_map" in config
    assert not (Path(tiny_qzhou_path) / "modeling_qzhou.py").exists()
    encoder = Encoder(model=tiny_qzhou_path)
    assert encoder.family == "qzhou" and encoder.pooling == "mean" and encoder.max_length == 8192
    assert encoder.encode_documents(TEXTS).shape == (len(TEXTS), 64)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_attention_is_bidirectional(tiny_qzhou_path: str, attention: str) -> None:
    """Matches a hand-written full-attention Qwen2 and differs clearly from the causal one.

    Run with sdpa and eager: flipping only each layer's ``is_causal`` would pass one and fail the other.
    """
    encoder = Encoder(model=tiny_qzhou_path, attn_implementation=attention)
    for text in TEXTS:
        ours = encoder.encode([text])[0]
        ids = _token_ids(tiny_qzhou_path, text)
        bidirectional = reference_vector(Path(tiny_qzhou_path), ids, causal=False)
        causal = reference_vector(Path(tiny_qzhou_path), ids, causal=True)
        assert np.abs(ours - bidirectional).max() < 1e-5
        assert float(ours @ causal) < 0.999, "the causal and bidirectional vectors should differ"


def test_stock_transformers_model_is_causal_and_wrong(tiny_qzhou_path: str) -> None:
    """The trap our loader avoids: the same weights in a stock Qwen2Model attend causally."""
    stock = Qwen2Model.from_pretrained(tiny_qzhou_path).eval()
    ids = _token_ids(tiny_qzhou_path, TEXTS[0])
    with torch.inference_mode():
        hidden = stock(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0)
    stock_vector = torch.nn.functional.normalize(hidden, dim=0).numpy()
    causal = reference_vector(Path(tiny_qzhou_path), ids, causal=True)
    assert np.abs(stock_vector - causal).max() < 1e-5


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("batch_tokens", [1, 64, 100_000])
def test_vector_is_the_same_alone_and_in_any_left_padded_batch(
    tiny_qzhou_path: str, attention: str, batch_tokens: int
) -> None:
    encoder = Encoder(model=tiny_qzhou_path, attn_implementation=attention, batch_tokens=batch_tokens)
    alone = np.stack([encoder.encode_queries([text])[0] for text in TEXTS])
    mixed = [LONG_TEXT, *TEXTS, LONG_TEXT + " 还有中文。"]
    in_batch = encoder.encode_queries(mixed)[1:-1]
    assert np.abs(alone - in_batch).max() <= 1e-5


def test_left_padding_and_positions_counted_from_first_real_token(tiny_qzhou_path: str) -> None:
    encoder = Encoder(model=tiny_qzhou_path)
    captured: dict[str, torch.Tensor] = {}
    module = encoder.backend.loaded.module

    def spy(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        captured.update({k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)})

    handle = module.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        encoder.encode(["短句。", LONG_TEXT])
    finally:
        handle.remove()
    mask, positions = captured["attention_mask"], captured["position_ids"]
    short_row = int(mask.sum(1).argmin())
    padding = int((mask[short_row] == 0).sum())
    assert padding > 0 and mask[short_row, :padding].sum() == 0  # padding on the left
    assert positions[short_row, padding:].tolist() == list(range(mask.shape[1] - padding))


def test_real_qwen_vocabulary(tiny_qzhou_path: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_qzhou_path)
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == QWEN25_FIRST_SPECIAL_ID
    assert tokenizer.convert_tokens_to_ids("<|file_sep|>") == QWEN25_FIRST_SPECIAL_ID + 21
    ids = tokenizer("地球的四季<|im_start|>")["input_ids"]
    assert ids[-1] == QWEN25_FIRST_SPECIAL_ID + 1 and len(ids) < 8  # real BPE merges for Chinese
    assert tokenizer.decode(ids) == "地球的四季<|im_start|>"


def test_bfloat16_runs_on_cpu(tiny_qzhou_path: str) -> None:
    full = Encoder(model=tiny_qzhou_path).encode_queries(TEXTS)
    half = Encoder(model=tiny_qzhou_path, dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    vectors = half.encode_queries(TEXTS)
    assert vectors.dtype == np.float32
    assert np.sum(vectors * full, axis=1).min() > 0.98


def test_weights_without_model_prefix_load(
    tmp_path: Path, qwen_tokenizer_dir: Path, tiny_qzhou_path: str
) -> None:
    plain = build_qzhou_checkpoint(tmp_path / "plain", qwen_tokenizer_dir, weight_prefix=False)
    np.testing.assert_allclose(
        Encoder(model=str(plain)).encode(TEXTS), Encoder(model=tiny_qzhou_path).encode(TEXTS), atol=1e-6
    )


def test_checkpoint_with_a_missing_layer_is_refused(tmp_path: Path, qwen_tokenizer_dir: Path) -> None:
    broken = build_qzhou_checkpoint(tmp_path / "broken", qwen_tokenizer_dir, drop_weights=("layers.1.",))
    with pytest.raises(ModelLoadError, match=r"missing keys: .*layers\.1\..*refused"):
        Encoder(model=str(broken))


def test_max_length_beyond_the_position_limit_is_refused(tmp_path: Path, qwen_tokenizer_dir: Path) -> None:
    short = build_qzhou_checkpoint(tmp_path / "short", qwen_tokenizer_dir, max_position_embeddings=512)
    assert Encoder(model=str(short)).max_length == 512
    with pytest.raises(ValueError, match=r"max_length=1024 exceeds .*\(512 positions\)"):
        Encoder(model=str(short), max_length=1024)


def test_hub_id_offline_without_cache_says_how_to_proceed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        ModelLoadError, match=r"not in the local Hugging Face cache and HF_HUB_OFFLINE is set.*model=DIR"
    ):
        Encoder(model="Kingsoft-LLM/QZhou-Embedding")


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        Encoder(model=str(tmp_path / "nowhere"))


def test_stock_config_is_untouched(tiny_qzhou_path: str) -> None:
    """Our bidirectional switch lives on our loaded copy, not on configs others load."""
    Encoder(model=tiny_qzhou_path)
    assert getattr(Qwen2Config.from_pretrained(tiny_qzhou_path), "is_causal", True) is True
