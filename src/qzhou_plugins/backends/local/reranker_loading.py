"""Which kind of reranker a checkpoint is, and its weights in memory with what scoring them needs.

The kind is read from the checkpoint's own files, never its name: a ``*ForSequenceClassification``
architecture is a cross-encoder (its activation as sentence-transformers saved it, sigmoid for one
label by default); a causal LM whose ``model_type`` has a yes/no template
(:mod:`qzhou_plugins.rerank.formats`), or one given a ``template=``, is an LLM reranker; QZhou, a
sentence-transformers folder (but one it saved as a ``CrossEncoder``) or a bare encoder is an
embedding model. The weights go through the process-wide registry like an encoder's; what one
reranker scores them by (label, activation, template: its :class:`RerankHead`) is its own.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from ...config import LlmTemplate, RerankerConfig
from ...rerank.formats import LLM_TEMPLATES, ST_ACTIVATIONS
from ..base import ModelLoadError, chosen_max_length
from . import registry
from .family_settings import is_decoder_only
from .loading import _check_loading_info, _is_qzhou, pick_device, weights_key
from .precision import pick_precision

__all__ = [
    "LoadedReranker",
    "RerankHead",
    "checkpoint_kind",
    "load_reranker",
    "refuse_cross_encoder_as_embedder",
]

LLM_DEFAULT_MAX_LENGTH = 8192
"""Qwen3-Reranker's default maximum (its model card)."""


@dataclass(frozen=True, eq=False)
class LoadedReranker:
    """A cross-encoder or LLM reranker in memory, shared by every reranker of it."""

    key: tuple[str, ...]
    name: str
    path: Path
    kind: str
    module: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    padding_side: str
    position_limit: int
    default_max_length: int
    pad_token_id: int
    needs_position_ids: bool
    token_type_ids: bool
    """Whether the model takes segment ids (BERT does, XLM-RoBERTa and decoders do not)."""
    hf_config: Any = None
    pair_tokenizer: Any = None
    """A private copy of the fast tokenizer (``tokenizers.Tokenizer``), no padding nor truncation
    but under :attr:`tokenizer_lock`: the Rust tokenizer's truncation state is not thread-safe."""
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class RerankHead:
    """How one reranker turns the shared weights' output into a score.

    Per configuration, never in the registry: two rerankers of one checkpoint may score by other
    labels, activations or templates while sharing one copy of the weights.
    """

    activation: str | None = None
    label_index: int = 0
    template: LlmTemplate | None = None
    judge: torch.Tensor | None = None
    """An LLM reranker's ``lm_head`` row of "yes" minus that of "no" (float32): one dot product with
    the last hidden state is logit(yes) - logit(no), without computing the whole vocabulary."""
    judge_bias: float = 0.0


def _hf_config(model: str, path: Path) -> Any:
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"{model!r} has no usable config.json: {error}") from error


def _what_it_is(hf_config: Any) -> str:
    architectures = ", ".join(hf_config.architectures or []) or f"a {hf_config.model_type} model"
    return f"{architectures} ({hf_config.model_type})"


def checkpoint_kind(config: RerankerConfig) -> str:
    """The kind of reranker the checkpoint of ``config`` is (see the module docstring)."""
    from .loading import resolve_model_path

    path = resolve_model_path(config.model)
    hf_config = _hf_config(config.model, path)
    architectures = hf_config.architectures or []
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        return "cross-encoder"
    saved_as_cross_encoder = _st_model_config(path).get("model_type") == "CrossEncoder"
    if _is_qzhou(hf_config) or ((path / "modules.json").is_file() and not saved_as_cross_encoder):
        return "embedding"
    if any(name.endswith("ForCausalLM") for name in architectures):
        template = config.template or LLM_TEMPLATES.get(hf_config.model_type)
        if template is None:
            raise ModelLoadError(
                f"{config.model!r} is a causal language model, {_what_it_is(hf_config)}, with no known "
                "reranker template: give template=LlmTemplate(...) with its prompt and yes/no tokens if it "
                "is an LLM reranker, or kind='embedding' to use it as an embedder"
            )
        return "llm"
    return "embedding"


def refuse_cross_encoder_as_embedder(config: RerankerConfig) -> None:
    """``kind="embedding"`` on a cross-encoder checkpoint: refused with what it is, not left to the
    encoder's loader, whose complaint about the classification head's weights would send the user
    to check the download."""
    from .loading import resolve_model_path

    try:
        hf_config = _hf_config(config.model, resolve_model_path(config.model))
    except ModelLoadError:
        return  # no config.json at the top (an older sentence-transformers layout): the encoder decides
    if any(name.endswith("ForSequenceClassification") for name in hf_config.architectures or []):
        raise ModelLoadError(
            f"{config.model!r} is {_what_it_is(hf_config)}, a cross-encoder: it scores a pair read together "
            "and was not trained to embed texts apart. Use kind='cross-encoder' (or leave kind out)"
        )


def _st_model_config(path: Path) -> dict[str, Any]:
    """sentence-transformers' ``config_sentence_transformers.json`` (its model type, and since its
    version 6 a cross-encoder's activation), or nothing."""
    try:
        return dict(json.loads((path / "config_sentence_transformers.json").read_text("utf-8")))
    except (FileNotFoundError, ValueError):
        return {}


def load_reranker(config: RerankerConfig, kind: str) -> tuple[LoadedReranker, RerankHead]:
    """The weights of ``config``'s cross-encoder or LLM reranker, from the registry (loaded once),
    and the head that scores with them as ``config`` asks."""
    key = (*weights_key(config), kind)
    loaded: LoadedReranker = registry.get_or_load(key, lambda: _load(config, kind, key))
    if kind == "cross-encoder":
        return loaded, _cross_encoder_head(config, loaded.hf_config, loaded.path)
    return loaded, _llm_head(config, loaded)


def _load(config: RerankerConfig, kind: str, key: tuple[str, ...]) -> LoadedReranker:
    path = Path(key[0])
    device = pick_device(config.device)
    dtype = pick_precision(config.dtype, device).weights
    hf_config = _hf_config(config.model, path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{config.model!r} has no fast tokenizer (tokenizer.json); convert it first")
    decoder = is_decoder_only(hf_config)
    position_limit = int(getattr(hf_config, "max_position_embeddings", 0) or 0) or 10**9
    if not decoder:
        position_limit = min(position_limit, int(tokenizer.model_max_length or position_limit))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    common: dict[str, Any] = {
        "key": key,
        "name": config.model,
        "path": path,
        "kind": kind,
        "tokenizer": tokenizer,
        "device": device,
        "dtype": dtype,
        "position_limit": position_limit,
        "pad_token_id": int(pad or 0),
        "needs_position_ids": decoder,
        "token_type_ids": "token_type_ids" in tokenizer.model_input_names,
        "hf_config": hf_config,
        "pair_tokenizer": _private_copy(tokenizer),
    }
    if kind == "cross-encoder":
        return _cross_encoder(config, hf_config, common)
    return _llm(config, hf_config, common)


def _private_copy(tokenizer: Any) -> Tokenizer:
    copy = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def _weights(
    config: RerankerConfig, model_class: Any, path: Path, dtype: torch.dtype, device: torch.device
) -> Any:
    try:
        module, info = model_class.from_pretrained(
            path, dtype=dtype, attn_implementation=config.attn_implementation, output_loading_info=True
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the weights of {config.model!r}: {error}") from error
    _check_loading_info(config.model, info, ignorable=("pooler.",))
    return module.to(device).eval()


def _cross_encoder(config: RerankerConfig, hf_config: Any, common: dict[str, Any]) -> LoadedReranker:
    if not any(name.endswith("ForSequenceClassification") for name in hf_config.architectures or []):
        raise ModelLoadError(
            f"{config.model!r} is {_what_it_is(hf_config)}, not a cross-encoder: it has no classification "
            "head to score a pair with. Use kind='embedding' (the cosine of its vectors) or a "
            "*ForSequenceClassification checkpoint"
        )
    _cross_encoder_head(config, hf_config, common["path"])  # a bad label= is refused before loading
    st_settings = _read_settings(common["path"])
    default_max = int(st_settings.get("max_seq_length") or common["position_limit"])
    module = _weights(
        config, AutoModelForSequenceClassification, common["path"], common["dtype"], common["device"]
    )
    if common["needs_position_ids"] and module.config.pad_token_id is None:
        # A decoder's classification head reads the last token that is not padding, and with no pad
        # id saved transformers refuses any batch of two. Pairs are padded on the left here, so the
        # last position is a real token: the id we pad with is the one to tell it.
        module.config.pad_token_id = common["pad_token_id"]
    return LoadedReranker(
        **common,
        module=module,
        padding_side="left" if common["needs_position_ids"] else "right",
        default_max_length=min(default_max, common["position_limit"]),
    )


def _cross_encoder_head(config: RerankerConfig, hf_config: Any, path: Path) -> RerankHead:
    labels = int(hf_config.num_labels)
    return RerankHead(
        activation=config.activation or _saved_activation(config.model, path, hf_config, labels),
        label_index=_label_index(config, hf_config, labels),
    )


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((path / "sentence_bert_config.json").read_text("utf-8")))
    except FileNotFoundError:
        return {}


def _label_index(config: RerankerConfig, hf_config: Any, labels: int) -> int:
    names = {str(name): int(index) for index, name in (hf_config.id2label or {}).items()}
    if config.label is None:
        if labels == 1:
            return 0
        raise ModelLoadError(
            f"{config.model!r} is a cross-encoder with {labels} labels ({', '.join(names) or 'unnamed'}): "
            "name the one whose score ranks candidates with label= (its index or name)"
        )
    if isinstance(config.label, int):
        if not 0 <= config.label < labels:
            raise ModelLoadError(
                f"label={config.label} is out of range: {config.model!r} has {labels} label(s)"
            )
        return config.label
    if config.label not in names:
        raise ModelLoadError(
            f"label={config.label!r} is not a label of {config.model!r}; its labels are {', '.join(names)}"
        )
    return names[config.label]


def _saved_activation(model: str, path: Path, hf_config: Any, labels: int) -> str:
    """The activation sentence-transformers saved with the checkpoint, read in its own order:
    ``config_sentence_transformers.json`` (version 6), then ``config.json`` (versions 4 and 5, then
    older), else sigmoid for one label and identity for several."""
    saved = (
        _st_model_config(path).get("activation_fn")
        or (getattr(hf_config, "sentence_transformers", None) or {}).get("activation_fn")
        or getattr(hf_config, "sbert_ce_default_activation_function", None)
    )
    if saved is None:
        return "sigmoid" if labels == 1 else "identity"
    if saved not in ST_ACTIVATIONS:
        raise ModelLoadError(
            f"{model!r} saved the activation {saved!r}, which is not supported "
            f"({', '.join(ST_ACTIVATIONS)}); give activation='sigmoid' or 'identity'"
        )
    return ST_ACTIVATIONS[saved]


def _llm(config: RerankerConfig, hf_config: Any, common: dict[str, Any]) -> LoadedReranker:
    template = _llm_template(config, hf_config)
    _yes_no_ids(config, template, common["tokenizer"])  # refused before the weights are read
    module = _weights(config, AutoModelForCausalLM, common["path"], common["dtype"], common["device"])
    return LoadedReranker(
        **common,
        module=module,
        padding_side="right",  # each candidate after the shared tokens (prefix_sharing)
        default_max_length=min(LLM_DEFAULT_MAX_LENGTH, common["position_limit"]),
    )


def _llm_template(config: RerankerConfig, hf_config: Any) -> LlmTemplate:
    """The caller's template, else the built-in one of the model's family; a causal LM is required."""
    template = config.template or LLM_TEMPLATES.get(hf_config.model_type)
    if template is None or not any(n.endswith("ForCausalLM") for n in hf_config.architectures or []):
        raise ModelLoadError(
            f"{config.model!r} is {_what_it_is(hf_config)}, not an LLM reranker: that needs a causal LM "
            "head and a yes/no template (built in for Qwen3-Reranker; template= for others)"
        )
    return template


def _yes_no_ids(config: RerankerConfig, template: LlmTemplate, tokenizer: Any) -> tuple[int, int]:
    ids = []
    for token in (template.yes_token, template.no_token):
        found = tokenizer.convert_tokens_to_ids(token)
        if found is None or found == tokenizer.unk_token_id:
            raise ModelLoadError(
                f"{config.model!r} has no single token {token!r} in its vocabulary: it cannot answer "
                f"{template.yes_token!r}/{template.no_token!r}, so it is not an LLM reranker of this template"
            )
        ids.append(int(found))
    return ids[0], ids[1]


def _llm_head(config: RerankerConfig, loaded: LoadedReranker) -> RerankHead:
    template = _llm_template(config, loaded.hf_config)
    yes, no = _yes_no_ids(config, template, loaded.tokenizer)
    head = loaded.module.get_output_embeddings()
    judge = (head.weight[yes] - head.weight[no]).detach().float()
    bias = 0.0 if getattr(head, "bias", None) is None else float(head.bias[yes] - head.bias[no])
    return RerankHead(template=template, judge=judge, judge_bias=bias)


def chosen_reranker_length(config: RerankerConfig, loaded: LoadedReranker) -> int:
    """The pair length: as asked (refused past the model's positions), else the model's default."""
    return chosen_max_length(
        config.max_length, config.model, loaded.position_limit, loaded.default_max_length
    )
