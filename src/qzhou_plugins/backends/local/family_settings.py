"""A checkpoint's family and the settings it gives: read from the model's own files, no weights.

The family record (:mod:`qzhou_plugins.families`) says attention, pooling, padding side, end token
and instructions; the checkpoint's sentence-transformers files refine what they declare (the Pooling
module, the saved prompts, ``max_seq_length``). This is the one place that reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from transformers import PretrainedConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from ...config import Pooling
from ...families import Checkpoint, ModelFamily, choose_family
from ..base import ModelLoadError

__all__ = [
    "checkpoint_signals",
    "close_with_end_token",
    "encoding_tokenizer",
    "family_settings",
    "is_decoder_only",
    "read_json",
]

_ST_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "last",
}
GENERIC_DECODER_MAX_LENGTH = 8192
"""Tokens per text of a decoder whose files say none: what instruction-tuned embedders train with."""


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {} if default is None else default


def is_decoder_only(config: PretrainedConfig) -> bool:
    """A causal-LM backbone (Qwen2, Llama, Mistral...), as opposed to a BERT-style encoder.

    BERT-style models also have a causal-LM head in transformers, so "has a causal LM" alone is not
    enough: encoders are the ones with a masked-LM head too.
    """
    model_type = config.model_type
    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and not getattr(config, "is_encoder_decoder", False)
    )


def sentence_transformers_pooling(path: Path) -> Pooling | None:
    """The pooling a sentence-transformers model declares in its Pooling module, if it has one.

    A module we would not reproduce exactly is refused rather than read as its nearest mode: several
    modes at once (sentence-transformers concatenates them), a mode we do not compute (weighted mean,
    mean over the square root of the length), or the prompt's tokens left out of a mean or a max.
    """
    modules = read_json(path / "modules.json", default=[])
    folders = [m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Pooling")]
    if not folders:
        return None
    settings = read_json(path / folders[0] / "config.json")
    if isinstance(settings.get("pooling_mode"), str):  # newer single-field form
        asked = [settings["pooling_mode"]]
        modes = [{"lasttoken": "last"}.get(asked[0], asked[0])]
    else:
        asked = [flag for flag, on in settings.items() if flag.startswith("pooling_mode_") and on is True]
        modes = [_ST_POOLING_FLAGS.get(flag, flag) for flag in asked]
    computed = set(_ST_POOLING_FLAGS.values())
    if len(modes) > 1 or any(mode not in computed for mode in modes):
        raise ModelLoadError(
            f"{path}'s sentence-transformers Pooling module asks for {', '.join(asked)}: only one of cls, "
            "mean, max or last-token pooling is computed here, and any other would give vectors unlike "
            "the ones sentence-transformers gives; save the model with one of them"
        )
    if modes and modes[0] in ("mean", "max") and settings.get("include_prompt") is False:
        raise ModelLoadError(
            f"{path}'s sentence-transformers Pooling module leaves the prompt's tokens out of its "
            f"{modes[0]} (include_prompt false), which is not computed here: save it with include_prompt true"
        )
    return modes[0] if modes else None  # type: ignore[return-value]


def checkpoint_signals(model: str, path: Path, hf_config: PretrainedConfig) -> Checkpoint:
    """What the family records recognise a checkpoint by."""
    names = (model, path.name, str(getattr(hf_config, "_name_or_path", "") or ""))
    return Checkpoint(
        architectures=tuple(hf_config.architectures or ()),
        model_type=str(hf_config.model_type),
        backbone="decoder" if is_decoder_only(hf_config) else "encoder",
        names=tuple(name for name in names if name),
        sentence_transformers_pooling=sentence_transformers_pooling(path),
    )


def family_settings(
    model: str, path: Path, hf_config: PretrainedConfig, tokenizer: Any, requested: str | None
) -> tuple[ModelFamily, dict[str, Any]]:
    """The checkpoint's family and what it decides: padding side, pooling, lengths, prompt style."""
    signals = checkpoint_signals(model, path, hf_config)
    family = choose_family(requested, signals, model)
    st_settings = read_json(path / "sentence_bert_config.json")
    st_config = read_json(path / "config_sentence_transformers.json")
    position_limit = int(getattr(hf_config, "max_position_embeddings", 0) or 0) or 10**9
    if family.backbone == "encoder":
        position_limit = min(position_limit, int(tokenizer.model_max_length or position_limit))
    generic = position_limit if family.backbone == "encoder" else GENERIC_DECODER_MAX_LENGTH
    default_max = family.default_max_length or int(st_settings.get("max_seq_length", generic))
    prompts = {k: v for k, v in (st_config.get("prompts") or {}).items() if isinstance(v, str) and v}
    return family, {
        "family": family.name,
        "padding_side": family.padding_side,
        "default_pooling": signals.sentence_transformers_pooling or family.pooling,
        "default_max_length": min(default_max, position_limit),
        "position_limit": position_limit,
        "prompt_style": family.prompt_style(prompts),
        "end_token": family.end_token,
    }


def encoding_tokenizer(tokenizer: Any, end_token: bool, model: str) -> Tokenizer:
    """A private copy of a checkpoint's fast tokenizer as the model encodes with it: no padding (the
    runtimes pad themselves; MiniLM's tokenizer.json pads every text to 128), and closed with the end
    token when its family needs one. The torch encoder and the GGUF export both tokenise with it."""
    private = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    private.no_padding()
    if end_token:
        close_with_end_token(private, tokenizer.eos_token, model)
    return private


def close_with_end_token(tokenizer: Tokenizer, end_token: str | None, model: str) -> None:
    """Make ``tokenizer`` (a private copy) end every text with ``end_token`` when it does not already:
    last-token families pool that token, and a text without it gets another vector than the one the
    model was trained to give. Done through the post-processor, so truncation keeps room for it.

    A tokenizer that already closes every text with a special token is left as it is: that token is
    the one the model was trained to pool, even when it is not the tokenizer's eos (Qwen3-Embedding
    appends ``<|endoftext|>`` while its eos is ``<|im_end|>``). A template that adds tokens of its own
    (Mistral's ``<s>`` in front) gets the end token inside it: a second template after it would take
    the first one's pieces for a pair and close each of them (``<s> </s> text </s>``).
    """
    if end_token is None or tokenizer.token_to_id(end_token) is None:
        raise ModelLoadError(
            f"{model!r} belongs to a family whose vectors are read at the end token, but its tokenizer "
            "has no end (eos) token: pass family= of a family without one, or fix the tokenizer"
        )
    if tokenizer.encode("x", add_special_tokens=True).special_tokens_mask[-1:] == [1]:
        return
    # The post-processor alone, as JSON (its pickled state): the whole tokenizer's JSON is megabytes.
    current = (
        None if tokenizer.post_processor is None else json.loads(tokenizer.post_processor.__getstate__())
    )
    end = {"id": end_token, "ids": [tokenizer.token_to_id(end_token)], "tokens": [end_token]}
    steps = [] if current is None else current["processors"] if current["type"] == "Sequence" else [current]
    templates = [i for i, step in enumerate(steps) if step["type"] == "TemplateProcessing"]
    if templates:
        steps[templates[-1]] = _closed(steps[templates[-1]], end)
    else:  # none, or steps that add no tokens (ByteLevel): BERT's and RoBERTa's end with one already
        bare = {"type": "TemplateProcessing", "single": [_piece("A", 0)], "special_tokens": {}}
        steps.append(_closed({**bare, "pair": [_piece("A", 0), _piece("B", 1)]}, end))
    closing = steps[0] if len(steps) == 1 else {"type": "Sequence", "processors": steps}
    tokenizer.post_processor = Tokenizer.from_str(
        json.dumps({**_CARRIER, "post_processor": closing})
    ).post_processor


_CARRIER: dict[str, Any] = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [],
    "normalizer": None,
    "pre_tokenizer": None,
    "decoder": None,
    "model": {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"},
}
"""The smallest tokenizer JSON: what a post-processor is rebuilt from its JSON in."""


def _piece(sequence: str, type_id: int) -> dict[str, Any]:
    return {"Sequence": {"id": sequence, "type_id": type_id}}


def _closed(template: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """A TemplateProcessing (its JSON) with ``end`` after each of its texts: the single one, and both
    sides of a pair (after the last piece of the first side, and at the end)."""

    def token(type_id: int) -> dict[str, Any]:
        return {"SpecialToken": {"id": end["id"], "type_id": type_id}}

    pair = list(template["pair"])
    first_side = max(i for i, piece in enumerate(pair) if next(iter(piece.values()))["type_id"] == 0)
    return {
        **template,
        "single": [*template["single"], token(0)],
        "pair": [*pair[: first_side + 1], token(0), *pair[first_side + 1 :], token(1)],
        "special_tokens": {**template["special_tokens"], end["id"]: end},
    }
