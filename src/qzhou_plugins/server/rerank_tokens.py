"""What a served reranker's request costs: the tokens its model runs, for the limits and ``usage``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenizers import Tokenizer

from ..config import LlmTemplate
from ..rerank.reranker import Reranker

__all__ = ["PairCounter"]


class PairCounter:
    """Tokens a served reranker runs for a query against its documents: what the limits and ``usage``
    count. Equal pairs are scored once, so a repeated document counts once.

    A cross-encoder reads each pair whole (the query, the document and the special tokens, capped at
    ``max_length``). An LLM reranker reads ``prefix + body + suffix`` with the body cut to fit, but
    the tokens its pairs share (the template, the instruction, the query) are run once per query
    (:mod:`~qzhou_plugins.backends.local.prefix_sharing`): they count once, and each pair's tail
    after them. A cross-encoder's pairs are counted on a copy of the reranker's pair tokenizer, never
    changed after it is made, so that concurrent requests count at once without a lock; an LLM
    reranker's rows come from the reranker itself (``LocalReranker.llm_pair_ids``, what it scores).
    """

    def __init__(self, reranker: Reranker) -> None:
        self.max_length = reranker.facts.max_length
        self.encoder = reranker.encoder
        self.template: LlmTemplate | None = None
        # A GGUF reranker on llama.cpp runs every pair whole, as its pair_tokens builds it.
        self.whole_pairs = getattr(reranker.backend, "pair_tokens", None)
        if reranker.backend is not None and self.whole_pairs is None:
            backend: Any = reranker.backend  # a local one (LocalReranker)
            loaded = backend.loaded
            with loaded.tokenizer_lock:
                self.tokenizer = Tokenizer.from_str(loaded.pair_tokenizer.to_str())
            self.tokenizer.no_padding()
            self.tokenizer.no_truncation()
            self.template = backend.template
            self.specials = self.tokenizer.num_special_tokens_to_add(True)
            self.backend = backend

    def __call__(self, query: str, documents: Sequence[str], instruction: str | None) -> int:
        documents = list(dict.fromkeys(documents))
        if self.encoder is not None:  # a served embedding model: the texts of each pair apart
            counted = self.encoder.backend.count_tokens([query, *documents]) or []
            return sum(min(n, self.max_length) for n in counted)
        if self.whole_pairs is not None:
            return sum(len(row) for row in self.whole_pairs([query] * len(documents), documents, instruction))
        if self.template is None:
            encodings = self.tokenizer.encode_batch([query, *documents], add_special_tokens=False)
            lengths = [len(encoding.ids) for encoding in encodings]
            return sum(min(lengths[0] + n + self.specials, self.max_length) for n in lengths[1:])
        from ..backends.local.prefix_sharing import shared_length

        rows, _ = self.backend.llm_pair_ids([query] * len(documents), documents, instruction)
        shared = shared_length(rows)
        return shared + sum(len(row) - shared for row in rows)
