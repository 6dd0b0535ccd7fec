"""Small random checkpoints of every built-in model family, each saved in its own published layout.

What makes a family run right or quietly wrong is in its files, not its size: the architecture in
``config.json``, how the weights are named, the sentence-transformers modules and saved prompts, the
tokenizer's post-processor (does it append the end token itself?) and which token it calls the end.
So each builder here writes what the published checkpoint has, at a tiny size (hidden 64, 2 layers
by default) with random weights, for tests and benchmarks that compare us with each family's
reference. The decoder families use the real Qwen2.5 vocabulary (:func:`~qzhou_plugins.testing.
save_qwen_tokenizer`, built once and passed in as ``tokenizer_directory``); the BERT-style folders
reuse all-MiniLM-L6-v2's weights with their sentence-transformers files rewritten.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from .testing import QWEN25_FIRST_SPECIAL_ID, QWEN25_SPECIAL_TOKENS, vocab_size_of

__all__ = [
    "BERT_STYLE_PROMPTS",
    "ENDOFTEXT",
    "FAMILY_FOLDERS",
    "GTE_QWEN2_QUERY_PROMPT",
    "QWEN3_QUERY_PROMPT",
    "build_bert_style_folder",
    "build_e5_mistral_checkpoint",
    "build_family_checkpoints",
    "build_gte_qwen2_checkpoint",
    "build_qwen3_embedding_checkpoint",
    "save_sentence_transformers_files",
]

ENDOFTEXT = "<|endoftext|>"
"""The token Qwen3-Embedding's and gte-Qwen2's tokenizers append to every text, and the one pooled."""
IM_END = "<|im_end|>"
IM_START = "<|im_start|>"

QWEN3_QUERY_PROMPT = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)
"""Qwen3-Embedding's saved sentence-transformers query prompt (no space after ``Query:``)."""
GTE_QWEN2_QUERY_PROMPT = QWEN3_QUERY_PROMPT + " "
"""gte-Qwen2-instruct's saved query prompt (a space after ``Query:``)."""

BertStyle = Literal["bge", "e5", "nomic"]
BERT_STYLE_PROMPTS: dict[str, tuple[str, dict[str, str]]] = {
    "bge": ("cls", {"query": "Represent this sentence for searching relevant passages: "}),
    "e5": ("mean", {"query": "query: ", "passage": "passage: "}),
    "nomic": (
        "mean",
        {
            "query": "search_query: ",
            "document": "search_document: ",
            "clustering": "clustering: ",
            "classification": "classification: ",
        },
    ),
}
"""Per BERT-style family: its Pooling mode and saved prompts, as the published folders ship them
(Nomic's own architecture needs remote code, so its prompts are put on a BERT here)."""

_ST_POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
"""The one flag of a sentence-transformers Pooling config that each pooling sets (two set flags
would be two poolings, concatenated)."""


def save_sentence_transformers_files(
    directory: Path,
    *,
    pooling: Literal["cls", "mean", "lasttoken"],
    width: int,
    prompts: dict[str, str],
    max_seq_length: int,
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
    _write_json(directory / "modules.json", modules)
    _write_json(directory / "1_Pooling" / "config.json", flags)
    _write_json(
        directory / "config_sentence_transformers.json",
        {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    _write_json(
        directory / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False}
    )


def build_qwen3_embedding_checkpoint(
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    name: str = "Qwen3-Embedding-tiny",
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    weight_scale: float = 0.3,
    weight_prefix: bool = False,
    seed: int = 0,
) -> Path:
    """A random Qwen3-Embedding in ``directory/name``: ``Qwen3ForCausalLM`` in config.json over the
    weights of a ``Qwen3Model`` (unprefixed names, no LM head; ``weight_prefix`` writes them with the
    ``model.`` of a causal-LM save instead), a sentence-transformers folder with last-token pooling and
    the published prompts, and a tokenizer that appends ``<|endoftext|>`` to every text while its
    ``eos_token`` is ``<|im_end|>`` (so "the eos token" is not the token the model pools)."""
    from transformers import Qwen3Config, Qwen3Model

    out = Path(directory) / name
    config = Qwen3Config(
        vocab_size=vocab_size_of(tokenizer_directory),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=hidden_size // num_attention_heads,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        initializer_range=weight_scale,
        bos_token_id=QWEN25_FIRST_SPECIAL_ID,
        eos_token_id=_special_id(IM_END),
    )
    _save_decoder(out, Qwen3Model, config, ["Qwen3ForCausalLM"], seed, weight_prefix)
    _save_tokenizer(out, tokenizer_directory, eos=IM_END, appended=ENDOFTEXT, padding_side="left")
    save_sentence_transformers_files(
        out,
        pooling="lasttoken",
        width=hidden_size,
        prompts={"query": QWEN3_QUERY_PROMPT, "document": ""},
        max_seq_length=8192,
    )
    return out


def build_gte_qwen2_checkpoint(
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    name: str = "gte-Qwen2-tiny-instruct",
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    weight_scale: float = 0.3,
    seed: int = 0,
) -> Path:
    """A random gte-Qwen2-instruct in ``directory/name`` (recognised by that name): Qwen2 weights, a
    sentence-transformers folder with last-token pooling and its query prompt (a space after
    ``Query:``), and a tokenizer that appends ``<|endoftext|>`` (its eos) to every text. The published
    model is run bidirectionally by its remote code, which sentence-transformers cannot do without."""
    from transformers import Qwen2Config, Qwen2Model

    out = Path(directory) / name
    config = Qwen2Config(
        vocab_size=vocab_size_of(tokenizer_directory),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
        initializer_range=weight_scale,
        bos_token_id=QWEN25_FIRST_SPECIAL_ID,
        eos_token_id=QWEN25_FIRST_SPECIAL_ID,
    )
    _save_decoder(out, Qwen2Model, config, ["Qwen2ForCausalLM"], seed, weight_prefix=True)
    _save_tokenizer(out, tokenizer_directory, eos=ENDOFTEXT, appended=ENDOFTEXT, padding_side="right")
    save_sentence_transformers_files(
        out,
        pooling="lasttoken",
        width=hidden_size,
        prompts={"query": GTE_QWEN2_QUERY_PROMPT},
        max_seq_length=8192,
    )
    return out


def build_e5_mistral_checkpoint(
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    name: str = "e5-mistral-tiny-instruct",
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    weight_scale: float = 0.3,
    seed: int = 0,
) -> Path:
    """A random E5-Mistral-7B-instruct in ``directory/name`` (recognised by that name): a
    ``MistralModel`` and no sentence-transformers files, as its model card uses it.

    Mistral's SentencePiece tokenizer is not available offline, so the tokenizer is the Qwen one made
    to behave like Mistral's where it matters: it puts a begin token (``<|im_start|>``) in front of
    every text and appends nothing, and its eos (``<|endoftext|>``) is what the card appends by hand.
    """
    from transformers import MistralConfig, MistralModel

    out = Path(directory) / name
    config = MistralConfig(
        vocab_size=vocab_size_of(tokenizer_directory),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=hidden_size // num_attention_heads,
        max_position_embeddings=32768,
        sliding_window=4096,
        rope_theta=10_000.0,
        tie_word_embeddings=False,
        initializer_range=weight_scale,
        bos_token_id=_special_id(IM_START),
        eos_token_id=QWEN25_FIRST_SPECIAL_ID,
    )
    _save_decoder(out, MistralModel, config, ["MistralModel"], seed, weight_prefix=False)
    _save_tokenizer(out, tokenizer_directory, eos=ENDOFTEXT, prepended=IM_START, padding_side="left")
    return out


def build_bert_style_folder(directory: str | Path, minilm_directory: str | Path, style: BertStyle) -> Path:
    """all-MiniLM-L6-v2's weights as a BGE-, E5- or Nomic-style sentence-transformers folder in
    ``directory/<style>-style-minilm``: the pooling and saved prompts of :data:`BERT_STYLE_PROMPTS`
    (the weights are linked, not copied)."""
    source = Path(minilm_directory)
    out = Path(directory) / f"{style}-style-minilm"  # FAMILY_FOLDERS
    out.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.name not in {"modules.json", "config_sentence_transformers.json"}:
            target = out / item.name
            if item.suffix == ".safetensors":
                target.symlink_to(item.resolve())
            else:
                shutil.copyfile(item, target)
    pooling, prompts = BERT_STYLE_PROMPTS[style]
    width = int(json.loads((source / "config.json").read_text("utf-8"))["hidden_size"])
    length = int(json.loads((source / "sentence_bert_config.json").read_text("utf-8"))["max_seq_length"])
    save_sentence_transformers_files(
        out,
        pooling=pooling,  # type: ignore[arg-type]
        width=width,
        prompts=prompts,
        max_seq_length=length,
    )
    return out


FAMILY_FOLDERS = {
    "qwen3": "Qwen3-Embedding-tiny",
    "gte": "gte-Qwen2-tiny-instruct",
    "e5-mistral": "e5-mistral-tiny-instruct",
    "bge": "bge-style-minilm",
    "e5": "e5-style-minilm",
    "nomic": "nomic-style-minilm",
}
"""The folder each of :func:`build_family_checkpoints`'s checkpoints is written to, by short name."""


def build_family_checkpoints(
    directory: str | Path, tokenizer_directory: str | Path, minilm_directory: str | Path
) -> dict[str, Path]:
    """One tiny checkpoint of every built-in family but QZhou (:func:`~qzhou_plugins.testing.
    build_qzhou_checkpoint`) in ``directory``, at the defaults, by the short names of
    :data:`FAMILY_FOLDERS`."""
    built = {
        "qwen3": build_qwen3_embedding_checkpoint(
            directory, tokenizer_directory, name=FAMILY_FOLDERS["qwen3"]
        ),
        "gte": build_gte_qwen2_checkpoint(directory, tokenizer_directory, name=FAMILY_FOLDERS["gte"]),
        "e5-mistral": build_e5_mistral_checkpoint(
            directory, tokenizer_directory, name=FAMILY_FOLDERS["e5-mistral"]
        ),
    }
    for style in ("bge", "e5", "nomic"):
        built[style] = build_bert_style_folder(directory, minilm_directory, style)  # type: ignore[arg-type]
    return built


def _special_id(token: str) -> int:
    return QWEN25_FIRST_SPECIAL_ID + QWEN25_SPECIAL_TOKENS.index(token)


def _save_decoder(
    out: Path, model_class: Any, config: Any, architectures: list[str], seed: int, weight_prefix: bool
) -> None:
    """The weights of ``model_class`` (a base model, no head) under their own names or ``model.``
    ones, and config.json naming ``architectures`` as the published checkpoint does."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = model_class(config)
    prefix = "model." if weight_prefix else ""
    state = {prefix + name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.architectures = architectures
    config.save_pretrained(out)


def _save_tokenizer(
    out: Path,
    tokenizer_directory: str | Path,
    *,
    eos: str,
    padding_side: str,
    appended: str | None = None,
    prepended: str | None = None,
) -> None:
    """The Qwen tokenizer with ``eos`` as its end token, a post-processor that appends ``appended``
    and/or prepends ``prepended`` to every text, and ``padding_side``."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    source = Path(tokenizer_directory)
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    used = [token for token in (prepended, appended) if token]
    head = f"{prepended}:0 " if prepended else ""
    single = f"{head}$A:0" + (f" {appended}:0" if appended else "")
    pair = (
        single
        + " "
        + (f"{prepended}:1 " if prepended else "")
        + "$B:1"
        + (f" {appended}:1" if appended else "")
    )
    tokenizer.post_processor = TemplateProcessing(
        single=single, pair=pair, special_tokens=[(token, _special_id(token)) for token in used]
    )
    tokenizer.save(str(out / "tokenizer.json"))
    settings = json.loads((source / "tokenizer_config.json").read_text("utf-8"))
    settings |= {"eos_token": eos, "pad_token": ENDOFTEXT, "padding_side": padding_side}
    if prepended:
        settings["bos_token"] = prepended
    _write_json(out / "tokenizer_config.json", settings)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", "utf-8")
