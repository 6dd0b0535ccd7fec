"""The GGUF export, read back with the ``gguf`` package's own reader: llama.cpp's keys that make the
vectors right (architecture, non-causal attention, mean pooling, context length, tokenizer), our own
keys (instructions, source), the weights in the chosen type, and the models it refuses.

Everything here is pure Python; running the files on llama.cpp is tests/test_llama_cpp.py."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from qzhou_plugins.backends.llama_cpp import keys
from qzhou_plugins.cli import main
from qzhou_plugins.gguf import GGUFExportError, export_gguf
from qzhou_plugins.instructions import QZHOU_INSTRUCTION_FORMAT, published_tasks

Q = gguf.GGMLQuantizationType


@functools.cache
def read(path: Path) -> gguf.GGUFReader:
    """One parse per file: the reader takes seconds over Qwen2's 151,665 tokens and 151,387 merges."""
    return gguf.GGUFReader(path)


def value(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


@pytest.fixture(scope="module")
def qzhou(gguf_file: Callable[..., Path]) -> gguf.GGUFReader:
    return read(gguf_file("qzhou", "f16"))


@pytest.fixture(scope="module")
def minilm(gguf_file: Callable[..., Path]) -> gguf.GGUFReader:
    return read(gguf_file("minilm", "f16"))


def test_qzhou_is_a_qwen2_with_bidirectional_attention_and_mean_pooling(qzhou: gguf.GGUFReader) -> None:
    assert value(qzhou, "general.architecture") == "qwen2"
    assert value(qzhou, "qwen2.attention.causal") is False
    assert value(qzhou, "qwen2.pooling_type") == gguf.PoolingType.MEAN
    assert value(qzhou, "qwen2.context_length") == 32768
    assert value(qzhou, "qwen2.attention.head_count_kv") == 2
    assert value(qzhou, "qwen2.rope.freq_base") == pytest.approx(1e6)
    assert value(qzhou, "general.file_type") == keys.GGUF_FILE_TYPES["f16"]


def test_qzhou_records_its_instructions_and_its_source(qzhou: gguf.GGUFReader, tiny_qzhou_path: str) -> None:
    assert value(qzhou, keys.FAMILY) == "qzhou"
    assert value(qzhou, keys.PROMPT_TEMPLATE) == QZHOU_INSTRUCTION_FORMAT
    assert value(qzhou, keys.INSTRUCTED_BY_DEFAULT) is True
    table = {name: task.model_dump(exclude={"name"}) for name, task in published_tasks().items()}
    assert json.loads(value(qzhou, keys.TASKS)) == table
    assert value(qzhou, keys.MAX_LENGTH) == 8192
    assert value(qzhou, keys.SOURCE_MODEL) == str(Path(tiny_qzhou_path).resolve())
    assert json.loads(value(qzhou, keys.SOURCE_FINGERPRINT))["bidirectional"] is True


def test_qzhou_tokenizer_is_qwen2_bpe_with_no_token_added(qzhou: gguf.GGUFReader) -> None:
    assert value(qzhou, "tokenizer.ggml.model") == "gpt2"
    assert value(qzhou, "tokenizer.ggml.pre") == "qwen2"
    assert value(qzhou, "tokenizer.ggml.add_bos_token") is False
    assert value(qzhou, "tokenizer.ggml.add_eos_token") is False
    types = value(qzhou, "tokenizer.ggml.token_type")
    assert len(types) == 151665
    assert types[151644] == gguf.TokenType.CONTROL  # <|im_start|>
    assert types[1000] == gguf.TokenType.NORMAL
    assert len(value(qzhou, "tokenizer.ggml.merges")) > 150_000
    assert "<|im_start|>" in json.loads(value(qzhou, keys.ADDED_TOKENS))


def test_minilm_is_a_bert_with_its_wordpiece_vocabulary(minilm: gguf.GGUFReader) -> None:
    assert value(minilm, "general.architecture") == "bert"
    assert value(minilm, "bert.attention.causal") is False
    assert value(minilm, "bert.pooling_type") == gguf.PoolingType.MEAN
    assert value(minilm, "bert.context_length") == 512
    assert value(minilm, "tokenizer.ggml.model") == "bert"
    assert value(minilm, "tokenizer.ggml.token_type_count") == 2
    tokens = value(minilm, "tokenizer.ggml.tokens")
    # llama.cpp's spelling: a word start carries "▁", a continuation loses its "##", [CLS] stays.
    assert (tokens[101], tokens[7592], tokens[2015]) == ("[CLS]", "\u2581hello", "s")
    assert value(minilm, keys.FAMILY) == "bert"
    assert value(minilm, keys.INSTRUCTED_BY_DEFAULT) is False
    assert value(minilm, keys.TASKS) is None
    assert value(minilm, keys.MAX_LENGTH) == 256
    assert value(minilm, keys.SOURCE_MODEL) == "all-MiniLM-L6-v2"


def test_the_weights_are_the_checkpoints_in_f16(gguf_file: Callable[..., Path], tiny_qzhou_path: str) -> None:
    tensors = {tensor.name: tensor for tensor in read(gguf_file("qzhou", "f16")).tensors}
    per_block = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{b}.{name}" for b in range(2) for name in [
            *(f"{m}.weight" for m in per_block), "attn_q.bias", "attn_k.bias", "attn_v.bias",
            "attn_norm.weight", "ffn_norm.weight"]
    }  # fmt: skip
    assert set(tensors) == expected
    assert {tensors[n].tensor_type for n in expected if n.endswith(("_norm.weight", ".bias"))} == {Q.F32}
    assert tensors["blk.1.ffn_down.weight"].tensor_type == Q.F16
    source = weights(tiny_qzhou_path)["model.layers.0.self_attn.q_proj.weight"]
    assert_written(tensors["blk.0.attn_q.weight"], source, 2**-10)


@pytest.mark.parametrize(
    ("gguf_type", "matrix", "precision"), [("bf16", Q.BF16, 2**-7), ("q8_0", Q.Q8_0, 1 / 127)]
)
def test_the_weights_are_the_checkpoints_in_the_chosen_type(
    gguf_file: Callable[..., Path], minilm_path: str, gguf_type: str, matrix: Q, precision: float
) -> None:
    tensors = {tensor.name: tensor for tensor in read(gguf_file("minilm", gguf_type)).tensors}
    assert tensors["blk.0.ffn_up.weight"].tensor_type == matrix
    assert tensors["position_embd.weight"].tensor_type == Q.F32  # llama.cpp keeps position tables f32
    source = weights(minilm_path)["encoder.layer.0.intermediate.dense.weight"]
    assert_written(tensors["blk.0.ffn_up.weight"], source, precision)


def weights(folder: str) -> dict[str, np.ndarray]:
    return load_file(str(Path(folder) / "model.safetensors"))


def assert_written(tensor: Any, source: np.ndarray, precision: float) -> None:
    """The tensor as written equals ``source`` to the precision of its type (relative to its maximum)."""
    written = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(source.shape)
    assert np.abs(written - source).max() <= precision * np.abs(source).max()
    assert np.abs(written - source).max() > 0  # really converted, not copied as f32


def test_a_model_llama_cpp_cannot_run_alike_is_refused(tmp_path: Path, tiny_qzhou_path: str) -> None:
    folder = Path(shutil.copytree(tiny_qzhou_path, tmp_path / "llama-typed"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama", "architectures": ["X"]}))
    with pytest.raises(GGUFExportError, match="model type 'llama' is not one this exporter maps"):
        export_gguf(folder, tmp_path / "out.gguf")
    assert list(tmp_path.glob("out.gguf*")) == []


def test_a_cased_wordpiece_vocabulary_is_refused(tmp_path: Path, minilm_path: str) -> None:
    folder = Path(shutil.copytree(minilm_path, tmp_path / "cased"))
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["normalizer"]["lowercase"] = False
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, "do_lower_case": False}))
    with pytest.raises(GGUFExportError, match="lowercases every text, and this tokenizer is cased"):
        export_gguf(folder, tmp_path / "out.gguf")


def test_a_bge_style_folder_keeps_its_cls_pooling_and_saved_prompts(tmp_path: Path, minilm_path: str) -> None:
    """A sentence-transformers folder's own Pooling module and prompts, not MiniLM's mean pooling."""
    from qzhou_plugins.testing_families import BERT_STYLE_PROMPTS, build_bert_style_folder

    out = export_gguf(build_bert_style_folder(tmp_path, minilm_path, "bge"), tmp_path / "bge.gguf")
    bge = read(out)
    assert value(bge, "bert.pooling_type") == gguf.PoolingType.CLS
    assert value(bge, keys.POOLING) == "cls"
    assert value(bge, keys.FAMILY) == "bert"
    assert value(bge, keys.FORMAT) == 1  # a family that readers of format 1 know
    assert json.loads(value(bge, keys.SAVED_PROMPTS)) == BERT_STYLE_PROMPTS["bge"][1]
    assert (value(bge, "tokenizer.ggml.add_bos_token"), value(bge, "tokenizer.ggml.add_sep_token")) == (
        True,
        True,
    )


def test_an_end_token_the_tokenizer_does_not_add_is_appended_by_the_file(
    tmp_path: Path, qwen_tokenizer_dir: Path
) -> None:
    """A Qwen3-Embedding whose tokenizer appends nothing gets the end token the torch encoder appends
    (the family's rule, one helper for both), as the one token llama.cpp appends to every text."""
    from qzhou_plugins import Encoder
    from qzhou_plugins.gguf.source import read_source
    from qzhou_plugins.gguf.vocabulary import special_affixes
    from qzhou_plugins.testing_families import build_qwen3_embedding_checkpoint

    folder = build_qwen3_embedding_checkpoint(tmp_path, qwen_tokenizer_dir)
    spec = json.loads((folder / "tokenizer.json").read_text())
    (folder / "tokenizer.json").write_text(json.dumps({**spec, "post_processor": None}))
    torch_ids = Encoder(model=str(folder)).backend._tokenizer.encode("a").ids  # type: ignore[attr-defined]
    prefix, suffix = special_affixes(read_source(str(folder)))
    assert (prefix, suffix) == ([], torch_ids[1:]) and len(suffix) == 1


def test_a_family_llama_cpp_cannot_run_alike_is_refused_naming_what_exports(
    tmp_path: Path, qwen_tokenizer_dir: Path
) -> None:
    from qzhou_plugins.testing_families import build_e5_mistral_checkpoint

    folder = build_e5_mistral_checkpoint(tmp_path, qwen_tokenizer_dir)
    with pytest.raises(GGUFExportError) as refused:
        export_gguf(folder, tmp_path / "e5.gguf")
    message = str(refused.value)
    assert "(e5-mistral family)" in message and "model type 'mistral'" in message
    assert "Qwen3-Embedding" in message and "gte-Qwen2" in message and "BERT-style" in message
    assert list(tmp_path.glob("e5.gguf*")) == []


def test_k_quants_without_llama_cpp_name_the_extra(tmp_path: Path) -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("llama-cpp-python is installed here: q4_k_m is exported in tests/test_llama_cpp.py")
    with pytest.raises(GGUFExportError, match=r"pip install 'qzhou-plugins\[llama\]'.*f16, bf16 and q8_0"):
        export_gguf("all-MiniLM-L6-v2", tmp_path / "out.gguf", "q4_k_m")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(GGUFExportError, match="unknown GGUF type 'q3'"):
        export_gguf("all-MiniLM-L6-v2", tmp_path / "out.gguf", "q3")
    with pytest.raises(GGUFExportError, match=r"must end in \.gguf"):
        export_gguf("all-MiniLM-L6-v2", tmp_path / "out.bin")


def test_the_command_line_exports_and_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "minilm.gguf"
    assert main(["export", "gguf", "all-MiniLM-L6-v2", str(out), "--type", "q8_0"]) == 0
    assert value(read(out), "general.file_type") == keys.GGUF_FILE_TYPES["q8_0"]
    assert "Wrote" in capsys.readouterr().out
    assert main(["export", "gguf", str(tmp_path / "missing"), str(out)]) == 1
    assert capsys.readouterr().err.startswith("error: model directory")
    assert main(["export", "gguf", "all-MiniLM-L6-v2", str(out), "--type", "q3"]) == 2
