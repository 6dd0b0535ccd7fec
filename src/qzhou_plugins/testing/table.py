"""What each tiny test checkpoint is made of, one row per kind of model.

A row says what the published checkpoint of its kind has and a test can tell apart: the architecture
named in config.json, the class whose weights are saved and how, the config keywords of the family
(positions, rope base, tied embeddings, token ids), the tokenizer (its end token, post-processor and
padding side) and the sentence-transformers files. Its sizes are the defaults a test may change;
:func:`~qzhou_plugins.testing.build.build_tiny_checkpoint` reads a row and writes the folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypedDict

from .tokenizer_files import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    QWEN25_FIRST_SPECIAL_ID,
    XLMR_SPECIAL_TOKENS,
    copy_tokenizer_files,
    qwen_special_id,
    resave_tokenizer,
    save_templated_tokenizer,
    save_xlmr_style_tokenizer,
)

QWEN3_QUERY_PROMPT = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)
"""Qwen3-Embedding's saved sentence-transformers query prompt (no space after ``Query:``)."""
GTE_QWEN2_QUERY_PROMPT = QWEN3_QUERY_PROMPT + " "
"""gte-Qwen2-instruct's saved query prompt (a space after ``Query:``)."""

Pooling = Literal["cls", "mean", "lasttoken"]


class Sizes(TypedDict, total=False):
    """The sizes, weight spread and seed a test may give any tiny checkpoint (the row has defaults)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    weight_scale: float
    """The standard deviation of the random weights (the config's ``initializer_range``)."""
    seed: int


class DecoderSizes(Sizes, total=False):
    """A decoder's sizes: grouped-query attention has its own number of key/value heads."""

    num_key_value_heads: int


class QZhouSizes(DecoderSizes, total=False):
    """QZhou's sizes: a test may also shorten its positions (to see a long text refused)."""

    max_position_embeddings: int


ENCODER_SIZES: Mapping[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "weight_scale": 0.2,
    "seed": 0,
}
"""The default sizes of a tiny BERT-like cross-encoder (std 0.2: scores spread, not all near 0.5)."""
DECODER_SIZES: Mapping[str, Any] = {**ENCODER_SIZES, "num_key_value_heads": 2, "weight_scale": 0.3}
"""The default sizes of a tiny decoder (std 0.3: causal and bidirectional attention give clearly
different vectors)."""


@dataclass(frozen=True)
class SentenceTransformersFiles:
    """The sentence-transformers modules a published folder ships (Transformer, Pooling, Normalize)."""

    pooling: Pooling
    prompts: Mapping[str, str]
    max_seq_length: int


@dataclass(frozen=True)
class TinyModel:
    """One kind of tiny checkpoint: see the module's docstring."""

    config_class: str
    """The transformers config class, by name (imported when a checkpoint is built)."""
    weights_class: str
    """The transformers model class whose random weights are saved."""
    architectures: tuple[str, ...]
    """What config.json names: the published checkpoint's architecture, not always ``weights_class``."""
    tokenizer: Callable[[Path, Path], object]
    """Writes the tokenizer into the folder (first argument) from the source folder (second)."""
    sizes: Mapping[str, Any]
    """The defaults of what a test may change (:class:`Sizes` and its subclasses)."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The config keywords of the family that no test changes."""
    weights: Literal["state_dict", "save_pretrained"] = "state_dict"
    """``state_dict``: the bare model's tensors, as the embedding checkpoints publish them (with or
    without ``model.``); ``save_pretrained``: transformers' own save, with its head."""
    weight_prefix: bool = False
    """Whether a ``state_dict`` row's tensors are named ``model.…`` (a causal-LM save) by default."""
    head_dim: bool = False
    """Whether config.json states ``head_dim`` (hidden size / heads), as Qwen3 and Mistral configs do."""
    folder: str = ""
    """The folder name the family is recognised by (its builder writes into ``directory/folder``)."""
    sentence_transformers: SentenceTransformersFiles | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """Set on the config after it is made: what its constructor does not take as it saves it."""


QWEN_POSITIONS = {"max_position_embeddings": 32768, "rope_theta": 1_000_000.0}
QWEN_TOKEN_IDS = {"bos_token_id": QWEN25_FIRST_SPECIAL_ID, "eos_token_id": QWEN25_FIRST_SPECIAL_ID}
XLMR_TOKEN_IDS = {
    "bos_token_id": XLMR_SPECIAL_TOKENS["<s>"],
    "pad_token_id": XLMR_SPECIAL_TOKENS["<pad>"],
    "eos_token_id": XLMR_SPECIAL_TOKENS["</s>"],
}

TINY_MODELS: dict[str, TinyModel] = {
    # The QZhou-Embedding config shape (custom code that is not there), Qwen2 weights under model.
    "qzhou": TinyModel(
        "Qwen2Config", "Qwen2Model", ("QZhouModel",), copy_tokenizer_files,
        sizes={**DECODER_SIZES, "max_position_embeddings": 32768},
        config={**QWEN_POSITIONS, **QWEN_TOKEN_IDS, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                "use_sliding_window": False, "sliding_window": 131072},
        weight_prefix=True,
        attributes={"auto_map": {"AutoModel": "modeling_qzhou.QZhouModel"}},
    ),
    "cross-encoder": TinyModel(
        "BertConfig", "BertForSequenceClassification", ("BertForSequenceClassification",),
        resave_tokenizer, ENCODER_SIZES, config={"max_position_embeddings": 512, "num_labels": 1},
        weights="save_pretrained",
    ),
    "xlmr-cross-encoder": TinyModel(
        "XLMRobertaConfig", "XLMRobertaForSequenceClassification", ("XLMRobertaForSequenceClassification",),
        save_xlmr_style_tokenizer, ENCODER_SIZES, weights="save_pretrained",
        config={"max_position_embeddings": 514, "type_vocab_size": 1, "num_labels": 1, **XLMR_TOKEN_IDS},
    ),
    # Qwen3-Reranker: a causal LM whose "yes" and "no" logits score the pair.
    "llm-reranker": TinyModel(
        "Qwen3Config", "Qwen3ForCausalLM", ("Qwen3ForCausalLM",),
        partial(resave_tokenizer, padding_side="left"), DECODER_SIZES, weights="save_pretrained",
        config={"max_position_embeddings": 40960, "tie_word_embeddings": False, **QWEN_TOKEN_IDS},
        head_dim=True,
    ),
    # Qwen3-Embedding: the weights of a Qwen3Model under a Qwen3ForCausalLM config; it appends
    # <|endoftext|> (pooled) though its eos is <|im_end|>.
    "qwen3": TinyModel(
        "Qwen3Config", "Qwen3Model", ("Qwen3ForCausalLM",),
        partial(save_templated_tokenizer, eos=IM_END, appended=ENDOFTEXT, padding_side="left"),
        DECODER_SIZES, head_dim=True, folder="Qwen3-Embedding-tiny",
        config={**QWEN_POSITIONS, **QWEN_TOKEN_IDS, "tie_word_embeddings": True,
                "eos_token_id": qwen_special_id(IM_END)},
        sentence_transformers=SentenceTransformersFiles(
            "lasttoken", {"query": QWEN3_QUERY_PROMPT, "document": ""}, 8192
        ),
    ),
    "gte": TinyModel(
        "Qwen2Config", "Qwen2Model", ("Qwen2ForCausalLM",),
        partial(save_templated_tokenizer, eos=ENDOFTEXT, appended=ENDOFTEXT, padding_side="right"),
        DECODER_SIZES, weight_prefix=True, folder="gte-Qwen2-tiny-instruct",
        config={**QWEN_POSITIONS, **QWEN_TOKEN_IDS, "tie_word_embeddings": False},
        sentence_transformers=SentenceTransformersFiles("lasttoken", {"query": GTE_QWEN2_QUERY_PROMPT}, 8192),
    ),
    # E5-Mistral: no sentence-transformers files; a begin token in front of every text, nothing after.
    "e5-mistral": TinyModel(
        "MistralConfig", "MistralModel", ("MistralModel",),
        partial(save_templated_tokenizer, eos=ENDOFTEXT, prepended=IM_START, padding_side="left"),
        DECODER_SIZES, head_dim=True, folder="e5-mistral-tiny-instruct",
        config={"max_position_embeddings": 32768, "sliding_window": 4096, "rope_theta": 10_000.0,
                "tie_word_embeddings": False, "bos_token_id": qwen_special_id(IM_START),
                "eos_token_id": QWEN25_FIRST_SPECIAL_ID},
    ),
}  # fmt: skip
"""Every kind of tiny checkpoint, by short name (the families' names are those of
:data:`~qzhou_plugins.testing_families.FAMILY_FOLDERS`)."""
