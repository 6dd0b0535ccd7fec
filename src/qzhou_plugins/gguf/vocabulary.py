"""The tokenizer in llama.cpp's terms, so that a llama.cpp runtime cuts texts into the very tokens
the Hugging Face tokenizer does.

Qwen2 is a byte-level BPE (``gpt2`` with Qwen2's pre-tokenizer and merges); BERT is WordPiece
(``bert``), whose vocabulary llama.cpp spells with a leading ``▁`` on word starts instead of a
``##`` on continuations. Which special tokens wrap every text is read from what the Hugging Face
tokenizer does, not from flags in its files: QZhou adds none, BERT adds [CLS] and [SEP], and a
family whose vectors are read at the end token (Qwen3-Embedding, gte-Qwen2) ends every text with it,
added by the tokenizer or, where the tokenizer adds none, by the family's rule as the torch encoder
does (``tokenizer.ggml.add_eos_token``: llama.cpp then appends it, once).
"""

from __future__ import annotations

import json

from ..backends.llama_cpp import keys
from ._library import gguf
from .rerankers import add_pair_tokens
from .source import DECODERS, GGUFExportError, Source

WORD_START = "\u2581"
"""llama.cpp's mark of a WordPiece token that starts a word."""


def special_affixes(source: Source) -> tuple[list[int], list[int]]:
    """The token ids the model puts before and after every text: the tokenizer's special tokens, and
    the end token of a family that needs one (the torch encoder's rule, the same helper)."""
    from ..backends.base import ModelLoadError
    from ..backends.local.family_settings import encoding_tokenizer

    try:
        end_token = bool(source.facts.defaults.get("end_token"))
        tokenizer = encoding_tokenizer(source.facts.tokenizer, end_token, source.name)
    except ModelLoadError as error:  # no end token to close with
        raise GGUFExportError(str(error)) from None
    tokenizer.no_truncation()
    body = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a", add_special_tokens=True).ids
    for start in range(len(full) - len(body) + 1):
        if full[start : start + len(body)] == body:
            return full[:start], full[start + len(body) :]
    raise GGUFExportError("the tokenizer changes a text's own tokens when it adds its special tokens")


def vocabulary(source: Source) -> tuple[list[str], list[int]]:
    """Every token in id order with its llama.cpp type; ids the tokenizer leaves unused are padded."""
    tokenizer = source.facts.tokenizer
    size = max(int(source.config.vocab_size), len(tokenizer))
    by_id = {number: token for token, number in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for number in range(size):
        token = by_id.get(number)
        if token is None:
            tokens.append(f"[PAD{number}]")
            types.append(gguf.TokenType.UNUSED)
        elif number in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if added[number].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def add_vocabulary(writer: gguf.GGUFWriter, source: Source) -> None:
    """Write the tokenizer of ``source`` to ``writer`` for its architecture."""
    tokens, types = vocabulary(source)
    prefix, suffix = special_affixes(source)
    if len(prefix) > 1 or len(suffix) > 1:
        raise GGUFExportError(
            f"{source.name!r} wraps texts in {len(prefix)} + {len(suffix)} special tokens; llama.cpp adds "
            "at most one before and one after"
        )
    decoder = source.architecture in DECODERS
    if source.kind == "llm":
        prefix, suffix = [], []  # the template frames every pair; nothing is added around it
    special = gguf.SpecialVocab(source.facts.path, load_merges=decoder, n_vocab=len(tokens))
    if decoder:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("qwen2")
        special.add_special_token = {"bos": bool(prefix), "eos": bool(suffix)}
        if prefix:
            special.special_token_ids["bos"] = prefix[0]
        if suffix:
            special.special_token_ids["eos"] = suffix[0]
    else:
        _check_wordpiece(source)
        control = gguf.TokenType.CONTROL
        tokens = [
            token if kind == control else _phantom(token) for token, kind in zip(tokens, types, strict=True)
        ]
        writer.add_tokenizer_model("bert")
        writer.add_tokenizer_pre("default")
        writer.add_token_type_count(int(getattr(source.config, "type_vocab_size", 1)))
        # [CLS] and [SEP] as llama.cpp's BERT reads them; [SEP] as an end-of-sequence token would make
        # llama.cpp warn on every load that it ends no generation.
        special.special_token_ids.pop("eos", None)
        special.special_token_ids.pop("cls", None)  # written as bos; the gguf package has no cls key
        special.add_special_token = {"bos": bool(prefix), "sep": bool(suffix)}
        if source.kind == "cross-encoder":
            add_pair_tokens(special, source.head)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special.add_to_gguf(writer, quiet=True)
    added = sorted(token.content for token in source.facts.tokenizer.added_tokens_decoder.values())
    writer.add_string(keys.ADDED_TOKENS, json.dumps(added, ensure_ascii=False))


def _phantom(token: str) -> str:
    return token[2:] if token.startswith("##") else WORD_START + token


def _check_wordpiece(source: Source) -> None:
    """llama.cpp's WordPiece lowercases every text: a cased vocabulary would get other tokens."""
    from tokenizers.normalizers import BertNormalizer

    backend = getattr(source.facts.tokenizer, "backend_tokenizer", None)
    normalizer = backend.normalizer if backend is not None else None
    if not isinstance(normalizer, BertNormalizer) or not normalizer.lowercase:
        raise GGUFExportError(
            f"cannot export {source.name!r} to GGUF: llama.cpp's WordPiece tokenizer lowercases every "
            "text, and this tokenizer is cased (or not BERT's), so the tokens would differ"
        )
