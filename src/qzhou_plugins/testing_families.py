"""Small random checkpoints of every built-in model family, each saved in its own published layout.

What makes a family run right or quietly wrong is in its files, not its size: the architecture in
``config.json``, how the weights are named, the sentence-transformers modules and saved prompts, the
tokenizer's post-processor (does it append the end token itself?) and which token it calls the end.
So each builder here writes what the published checkpoint has (its row of
:data:`~qzhou_plugins.testing.TINY_MODELS`), at a tiny size (hidden 64, 2 layers by default) with
random weights, for tests and benchmarks that compare us with each family's reference. The decoder
families use the real Qwen2.5 vocabulary (:func:`~qzhou_plugins.testing.save_qwen_tokenizer`, built
once and passed in as ``tokenizer_directory``); the BERT-style folders reuse all-MiniLM-L6-v2's
weights with their sentence-transformers files rewritten.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .testing import TINY_MODELS, build_tiny_checkpoint, save_sentence_transformers_files
from .testing.table import GTE_QWEN2_QUERY_PROMPT, QWEN3_QUERY_PROMPT, Pooling
from .testing.tokenizer_files import ENDOFTEXT

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .testing import DecoderSizes

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

BertStyle = Literal["bge", "e5", "nomic"]
BERT_STYLE_PROMPTS: dict[str, tuple[Pooling, dict[str, str]]] = {
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

DECODER_FAMILIES = ("qwen3", "gte", "e5-mistral")
"""The families whose tiny checkpoints are random decoders (rows of ``TINY_MODELS`` by these names)."""

FAMILY_FOLDERS = {name: TINY_MODELS[name].folder for name in DECODER_FAMILIES} | {
    style: f"{style}-style-minilm" for style in BERT_STYLE_PROMPTS
}
"""The folder each of :func:`build_family_checkpoints`'s checkpoints is written to, by short name."""


def build_qwen3_embedding_checkpoint(
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    name: str = FAMILY_FOLDERS["qwen3"],
    weight_prefix: bool = False,
    **sizes: Unpack[DecoderSizes],
) -> Path:
    """A random Qwen3-Embedding in ``directory/name``: ``Qwen3ForCausalLM`` in config.json over the
    weights of a ``Qwen3Model`` (unprefixed names, no LM head; ``weight_prefix`` writes them with the
    ``model.`` of a causal-LM save instead), a sentence-transformers folder with last-token pooling and
    the published prompts, and a tokenizer that appends ``<|endoftext|>`` to every text while its
    ``eos_token`` is ``<|im_end|>`` (so "the eos token" is not the token the model pools)."""
    return build_tiny_checkpoint(
        "qwen3", Path(directory) / name, tokenizer_directory, weight_prefix=weight_prefix, **sizes
    )


def build_gte_qwen2_checkpoint(
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    name: str = FAMILY_FOLDERS["gte"],
    **sizes: Unpack[DecoderSizes],
) -> Path:
    """A random gte-Qwen2-instruct in ``directory/name`` (recognised by that name): Qwen2 weights, a
    sentence-transformers folder with last-token pooling and its query prompt (a space after
    ``Query:``), and a tokenizer that appends ``<|endoftext|>`` (its eos) to every text. The published
    model is run bidirectionally by its remote code, which sentence-transformers cannot do without."""
    return build_tiny_checkpoint("gte", Path(directory) / name, tokenizer_directory, **sizes)


def build_e5_mistral_checkpoint(
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    name: str = FAMILY_FOLDERS["e5-mistral"],
    **sizes: Unpack[DecoderSizes],
) -> Path:
    """A random E5-Mistral-7B-instruct in ``directory/name`` (recognised by that name): a
    ``MistralModel`` and no sentence-transformers files, as its model card uses it.

    Mistral's SentencePiece tokenizer is not available offline, so the tokenizer is the Qwen one made
    to behave like Mistral's where it matters: it puts a begin token (``<|im_start|>``) in front of
    every text and appends nothing, and its eos (``<|endoftext|>``) is what the card appends by hand.
    """
    return build_tiny_checkpoint("e5-mistral", Path(directory) / name, tokenizer_directory, **sizes)


def build_bert_style_folder(directory: str | Path, minilm_directory: str | Path, style: BertStyle) -> Path:
    """all-MiniLM-L6-v2's weights as a BGE-, E5- or Nomic-style sentence-transformers folder in
    ``directory/<style>-style-minilm``: the pooling and saved prompts of :data:`BERT_STYLE_PROMPTS`
    (the weights are linked, not copied)."""
    source = Path(minilm_directory)
    out = Path(directory) / FAMILY_FOLDERS[style]
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
        out, pooling=pooling, width=width, prompts=prompts, max_seq_length=length
    )
    return out


def build_family_checkpoints(
    directory: str | Path, tokenizer_directory: str | Path, minilm_directory: str | Path
) -> dict[str, Path]:
    """One tiny checkpoint of every built-in family but QZhou (:func:`~qzhou_plugins.testing.
    build_qzhou_checkpoint`) in ``directory``, at the defaults, by the short names of
    :data:`FAMILY_FOLDERS`."""
    built = {
        name: build_tiny_checkpoint(name, Path(directory) / FAMILY_FOLDERS[name], tokenizer_directory)
        for name in DECODER_FAMILIES
    }
    for style in ("bge", "e5", "nomic"):
        built[style] = build_bert_style_folder(directory, minilm_directory, style)  # type: ignore[arg-type]
    return built
