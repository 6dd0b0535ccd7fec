"""The llama.cpp reranker: a GGUF cross-encoder or LLM reranker behind :class:`RerankBackend`.

Each pair is built as llama.cpp's server builds it for ``/v1/rerank`` (``format_prompt_rerank``):
a cross-encoder reads ``[start] query [end] [separator] candidate [end]`` by the file's
``add_bos``/``add_eos``/``add_sep`` flags; an LLM reranker reads its template's prefix, body and
suffix, tokenised in those three parts as the torch reranker does. Only the candidate is cut to
``max_length``, with the usual warning. The file's rank pooling computes the head: a
cross-encoder's logit (the saved activation applied here, as the torch reranker applies it), or an
LLM reranker's softmax over yes/no, whose first output is P(yes).

llama-cpp-python's own ``Llama.embed`` cannot do this: it builds no pair, and it reads ``n_embd``
floats per sequence where a rank-pooled sequence has ``n_cls_out`` (one, or two for yes/no).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ...config import RerankerConfig
from ...rerank.formats import score_scale
from ..base import ModelLoadError, RerankerFacts, chosen_max_length, warn_truncated
from . import keys
from .context import EmbeddingContext
from .library import llama_cpp, load_model
from .metadata import RerankFile, is_reranker, rerank_file
from .runner import DEFAULT_BATCH_TOKENS, _gpu_layers, _refuse_torch_options, pack_by_tokens
from .tokens import Tokenizer

__all__ = ["LlamaCppReranker", "gguf_kind"]


def gguf_kind(config: RerankerConfig) -> str:
    """The reranker kind of a GGUF file: ``cross-encoder`` or ``llm`` for a reranker's file (rank
    pooling), ``embedding`` for an embedder's."""
    path = _existing(config.model)
    model = load_model(path, _gpu_layers(config.device))
    if not is_reranker(model.metadata):
        return "embedding"
    return rerank_file(str(path), model.metadata, model.context_length).kind


def _existing(model: str) -> Path:
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"GGUF file {model!r} does not exist")
    return path


class LlamaCppReranker:
    """Scores (query, document) pairs with a GGUF reranker through llama.cpp (see the module docstring)."""

    def __init__(self, config: RerankerConfig, kind: str) -> None:
        _refuse_torch_options(config)
        path = _existing(config.model)
        self.config = config
        self.model = load_model(path, _gpu_layers(config.device))
        if not is_reranker(self.model.metadata):
            raise ModelLoadError(
                f"{config.model!r} is an embedding model's GGUF file, not a reranker's (no rank pooling): "
                "leave kind out (its cosine reranks) or export a cross-encoder or LLM reranker"
            )
        self.file: RerankFile = rerank_file(str(path), self.model.metadata, self.model.context_length)
        if kind != self.file.kind:
            raise ValueError(f"kind={kind!r}: {config.model!r} is a {self.file.kind} reranker's file")
        if "template" in config.model_fields_set:
            raise ValueError(f"template=: the template of {config.model!r} is the one it was exported with")
        self.max_length = chosen_max_length(
            config.max_length, config.model, self.model.context_length, self.file.max_length
        )
        self.tokenizer = Tokenizer(self.model)
        self._frame = self._pair_frame()
        width = int(llama_cpp().llama_model_n_cls_out(self.model.pointer))
        budget = config.batch_tokens if "batch_tokens" in config.model_fields_set else DEFAULT_BATCH_TOKENS
        self._threads = config.threads or os.cpu_count() or 1
        self._width = width
        self.context = self._make_context(budget)  # checks attention and pooling now
        self._facts = self._make_facts(path)

    def _make_context(self, budget: int) -> EmbeddingContext:
        return EmbeddingContext(
            self.model,
            budget=budget,
            threads=self._threads,
            pooling="rank",
            causal=self.file.kind == "llm",
            width=self._width,
        )

    def _pair_frame(self) -> tuple[list[int], list[int], list[int]]:
        """A cross-encoder's tokens before the query, between the two texts and after the candidate;
        an LLM reranker's prefix and suffix ids (and nothing between)."""
        library, vocab = llama_cpp(), self.model.vocab
        template = self.file.template
        if template is not None:
            return self.tokenizer.tokens(template.prefix), [], self.tokenizer.tokens(template.suffix)
        end = int(library.llama_vocab_eos(vocab))
        if end < 0:
            end = int(library.llama_vocab_sep(vocab))  # as the server: the separator closes each side
        start = [int(library.llama_vocab_bos(vocab))] if library.llama_vocab_get_add_bos(vocab) else []
        closing = [end] if library.llama_vocab_get_add_eos(vocab) else []
        between = closing + (
            [int(library.llama_vocab_sep(vocab))] if library.llama_vocab_get_add_sep(vocab) else []
        )
        return start, between, closing

    def _make_facts(self, path: Path) -> RerankerFacts:
        stat = path.stat()
        weights = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        kind = self.file.kind
        return RerankerFacts(
            model=self.config.model,
            kind=kind,
            score_scale=score_scale(kind, self.file.activation),
            max_length=self.max_length,
            position_limit=self.model.context_length,
            fingerprint={
                "backend": "llama.cpp",
                "model": self.config.model,
                "kind": kind,
                "weights": weights[:16],
                "source_model": self.file.source_model or "",
                "activation": self.file.activation,
                "max_length": str(self.max_length),
            },
            instructed=kind == "llm",
            runtime=f"llama.cpp, {keys.type_name(int(self.model.metadata.get('general.file_type', '-1')))}",
        )

    @property
    def facts(self) -> RerankerFacts:
        return self._facts

    # -- the seam -----------------------------------------------------------------------------------

    def score_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        scores = np.empty(len(queries), dtype=np.float32)
        if not len(queries):
            return scores
        sequences = self.pair_tokens(queries, documents, instruction)
        lengths = [len(sequence) for sequence in sequences]
        if max(lengths) > self.context.budget:
            self.context = self._make_context(
                min(max(max(lengths), 2 * self.context.budget), self.max_length)
            )
        context = self.context
        with tqdm(total=len(sequences), unit="pair", desc="Reranking", disable=not show_progress) as progress:
            for batch in pack_by_tokens(lengths, context.budget, context.max_sequences):
                scores[batch] = context.embed([sequences[p] for p in batch])[:, 0]
                progress.update(len(batch))
        if self.file.activation == "sigmoid" and self.file.kind == "cross-encoder":
            scores = (1.0 / (1.0 + np.exp(-scores.astype(np.float64)))).astype(np.float32)
        return scores

    # -- below the seam -----------------------------------------------------------------------------

    def pair_tokens(
        self, queries: Sequence[str], documents: Sequence[str], instruction: str | None = None
    ) -> list[list[int]]:
        """The token ids of each pair as llama.cpp's server builds them, the candidate cut to fit."""
        start, between, closing = self._frame
        template = self.file.template
        room = self.max_length - len(start) - len(between) - len(closing)
        heads: dict[str, list[int]] = {}
        for query in dict.fromkeys(queries):
            if template is None:
                heads[query] = self.tokenizer.tokens(query) + between
            else:
                heads[query] = self._body(query, "", instruction)
            if len(heads[query]) >= room:
                raise ValueError(
                    f"the query alone takes {len(heads[query])} tokens and max_length={self.max_length} "
                    f"leaves {room} for the query and each candidate: no candidate would be seen. Shorten "
                    f"the query (it begins {query[:40]!r}) or raise max_length (this model allows "
                    f"{self.model.context_length})"
                )
        sequences, cut = [], 0
        for query, document in zip(queries, documents, strict=True):
            if template is None:
                body = heads[query] + self.tokenizer.tokens(document)
            else:
                body = self._body(query, document, instruction)
            cut += len(body) > room
            sequences.append(start + body[:room] + closing)
        warn_truncated(
            cut,
            len(sequences),
            self.max_length,
            self.model.context_length,
            what="candidates",
            kept="query and the pair's frame included; the query is kept whole",
        )
        return sequences

    def _body(self, query: str, document: str, instruction: str | None) -> list[int]:
        template = self.file.template
        if instruction is not None and "{instruction}" not in template.body:
            raise ValueError(
                f"{self.config.model!r} was converted with its instruction fixed in its prompt: it takes none"
            )
        chosen = template.default_instruction if instruction is None else instruction
        return self.tokenizer.tokens(template.body.format(instruction=chosen, query=query, document=document))

    def __repr__(self) -> str:
        kind = self.model.metadata.get("general.file_type", "?")
        return f"LlamaCppReranker(model={self.config.model!r}, kind={self.file.kind!r}, file_type={kind})"
