"""The one builder of tiny test checkpoints, which reads a row of :data:`~.table.TINY_MODELS`, and the
public builders of the QZhou checkpoint and the rerankers (the embedding families' are in
:mod:`qzhou_plugins.testing_families`)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from .table import TINY_MODELS, Pooling, TinyModel
from .tokenizer_files import vocab_size_of, write_json

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .table import DecoderSizes, QZhouSizes, Sizes


def build_tiny_checkpoint(
    kind: str | TinyModel,
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    weight_prefix: bool | None = None,
    drop_weights: tuple[str, ...] = (),
    dtype: torch.dtype = torch.float32,
    config: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
    **sizes: Unpack[QZhouSizes],
) -> Path:
    """A random checkpoint of ``kind`` (a row, or its short name in :data:`~.table.TINY_MODELS`) in
    ``directory``, with its tokenizer made from ``tokenizer_directory``.

    ``sizes`` change the row's defaults (a size the row has no default for is refused);
    ``config`` and ``attributes`` add to or change the row's own. ``weight_prefix`` (the row's when
    None) and ``drop_weights`` (tensors whose unprefixed names start with one of them are left out,
    to make a broken checkpoint) apply to a row saved as a state dict.
    """
    row = TINY_MODELS[kind] if isinstance(kind, str) else kind
    unknown = sorted(set(sizes) - set(row.sizes))
    if unknown:
        raise TypeError(
            f"a tiny {row.weights_class} takes no {', '.join(unknown)}; it takes {', '.join(row.sizes)}"
        )
    chosen: dict[str, Any] = {**row.sizes, **sizes}
    seed = chosen.pop("seed")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    row.tokenizer(out, Path(tokenizer_directory))
    model_config = _model_config(row, {**(config or {}), **chosen, "vocab_size": vocab_size_of(out)})
    for name, value in {**row.attributes, **(attributes or {})}.items():
        setattr(model_config, name, value)
    torch.manual_seed(seed)
    model = getattr(importlib.import_module("transformers"), row.weights_class)(model_config).to(dtype)
    if row.weights == "save_pretrained":
        model.save_pretrained(out)
    else:
        prefix = "model." if (row.weight_prefix if weight_prefix is None else weight_prefix) else ""
        state = {
            prefix + name: tensor.contiguous()
            for name, tensor in model.state_dict().items()
            if not name.startswith(drop_weights)
        }
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        model_config.save_pretrained(out)
    if row.sentence_transformers is not None:
        files = row.sentence_transformers
        save_sentence_transformers_files(
            out,
            pooling=files.pooling,
            width=chosen["hidden_size"],
            prompts=dict(files.prompts),
            max_seq_length=files.max_seq_length,
        )
    return out


def _model_config(row: TinyModel, chosen: Mapping[str, Any]) -> Any:
    """The row's transformers config with the chosen sizes (``weight_scale`` is the config's
    ``initializer_range``) and the architectures the published checkpoint names."""
    settings = {**row.config, **chosen}
    settings["initializer_range"] = settings.pop("weight_scale")
    if row.head_dim:
        settings["head_dim"] = settings["hidden_size"] // settings["num_attention_heads"]
    config_class = getattr(importlib.import_module("transformers"), row.config_class)
    return config_class(**settings, architectures=list(row.architectures))


_ST_POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
"""The one flag of a sentence-transformers Pooling config that each pooling sets (two set flags
would be two poolings, concatenated)."""


def save_sentence_transformers_files(
    directory: Path, *, pooling: Pooling, width: int, prompts: dict[str, str], max_seq_length: int
) -> None:
    """modules.json (Transformer, Pooling, Normalize), the Pooling config, the saved prompts and the
    length, in the file layout sentence-transformers reads."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    flags: dict[str, Any] = {"word_embedding_dimension": width}
    flags |= {flag: flag == _ST_POOLING_FLAGS[pooling] for flag in _ST_POOLING_FLAGS.values()}
    flags |= {
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "include_prompt": True,
    }
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "2_Normalize").mkdir(exist_ok=True)
    write_json(directory / "modules.json", modules)
    write_json(directory / "1_Pooling" / "config.json", flags)
    write_json(
        directory / "config_sentence_transformers.json",
        {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    write_json(
        directory / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False}
    )


def build_qzhou_checkpoint(
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    weight_prefix: bool = True,
    drop_weights: tuple[str, ...] = (),
    dtype: torch.dtype = torch.float32,
    **sizes: Unpack[QZhouSizes],
) -> Path:
    """A random QZhou-shaped checkpoint in ``directory``, with the tokenizer from ``tokenizer_directory``
    copied as it is (sizes: :data:`~.table.DECODER_SIZES`, 32,768 positions).

    The default weight spread (std 0.3) is large enough that causal and bidirectional attention give
    clearly different vectors. ``drop_weights`` removes every weight whose name starts with one of
    the given prefixes, to make a broken checkpoint.
    """
    return build_tiny_checkpoint(
        "qzhou", directory, tokenizer_directory, weight_prefix=weight_prefix, drop_weights=drop_weights,
        dtype=dtype, **sizes,
    )  # fmt: skip


def build_cross_encoder_checkpoint(
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    num_labels: int = 1,
    activation: str | None = None,
    **sizes: Unpack[Sizes],
) -> Path:
    """A random BERT cross-encoder (``BertForSequenceClassification``) with a real WordPiece tokenizer
    (sizes: :data:`~.table.ENCODER_SIZES`).

    ``activation`` is saved the way sentence-transformers saves it (``config.sentence_transformers``),
    e.g. ``"torch.nn.modules.linear.Identity"``; None saves none (sigmoid for one label).
    """
    saved = {} if activation is None else {"sentence_transformers": {"activation_fn": activation}}
    return build_tiny_checkpoint(
        "cross-encoder", directory, tokenizer_directory, config={"num_labels": num_labels},
        attributes=saved, **sizes,
    )  # fmt: skip


def build_llm_reranker_checkpoint(
    directory: str | Path, tokenizer_directory: str | Path, **sizes: Unpack[DecoderSizes]
) -> Path:
    """A random Qwen3-Reranker-shaped checkpoint (``Qwen3ForCausalLM``) with the real Qwen vocabulary,
    in which "yes" and "no" are single tokens (sizes: :data:`~.table.DECODER_SIZES`)."""
    return build_tiny_checkpoint("llm-reranker", directory, tokenizer_directory, **sizes)


def build_xlmr_cross_encoder_checkpoint(
    directory: str | Path, wordpiece_directory: str | Path, **sizes: Unpack[Sizes]
) -> Path:
    """A random ``XLMRobertaForSequenceClassification`` (one label) with the RoBERTa-format pair
    tokenizer of :func:`~.tokenizer_files.save_xlmr_style_tokenizer` (a real vocabulary, not XLM-R's
    own; sizes: :data:`~.table.ENCODER_SIZES`)."""
    return build_tiny_checkpoint("xlmr-cross-encoder", directory, wordpiece_directory, **sizes)


def one_segment_cross_encoder(source: str | Path, directory: str | Path) -> Path:
    """A copy of the BERT cross-encoder ``source`` whose second segment row equals its first: the
    cross-encoder llama.cpp computes alike (it gives every token segment 0), so its GGUF export is
    not refused."""
    import shutil

    from safetensors.numpy import load_file
    from safetensors.numpy import save_file as save_numpy

    out = Path(shutil.copytree(source, directory))
    tensors = load_file(str(out / "model.safetensors"))
    table = tensors["bert.embeddings.token_type_embeddings.weight"]
    table[1:] = table[0]
    save_numpy(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
