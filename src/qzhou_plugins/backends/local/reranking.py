"""The local reranker runtime: cross-encoders and LLM rerankers scored with torch in this process.

tokenise each pair (the candidate side alone truncated) -> plan batches by tokens, longest first ->
pad -> forward -> one score per pair in fp32 -> the caller's order; a batch that runs out of memory
is split in two and retried. The encoder's planner, out-of-memory rule, truncation warning and
weights registry are used as they are: what differs is the pair's tokens and the head.

- A cross-encoder encodes ``[CLS] query [SEP] candidate [SEP]`` (the tokenizer's own pair format,
  segment ids included) and scores by the activation sentence-transformers saved.
- An LLM reranker reads ``prefix + body + suffix`` (:class:`~qzhou_plugins.config.LlmTemplate`),
  tokenised in those three parts as the model card does, the body cut so that the template stays
  whole; the tokens a query's pairs share are computed once (:mod:`.prefix_sharing`); the score is
  sigmoid(logit(yes) - logit(no)) at each pair's last token, computed for those two tokens only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ...config import LlmTemplate, RerankerConfig
from ...rerank.formats import score_scale
from ..base import RerankerFacts, warn_truncated
from . import registry
from .batching import plan_batches
from .loading import weights_stamp
from .precision import OnDevice, Precision, pick_precision
from .prefix_sharing import KeyValues, prefix_state, score_sharing_prefixes, tail_hidden
from .reranker_loading import LoadedReranker, RerankHead, chosen_reranker_length, load_reranker
from .runner import padded_inputs, run_halving

__all__ = ["LocalReranker"]


class LocalReranker(OnDevice):
    """Scores (query, document) pairs with a cross-encoder or LLM reranker loaded in this process."""

    def __init__(self, config: RerankerConfig, kind: str) -> None:
        self.config = config
        if config.threads is not None:
            torch.set_num_threads(config.threads)  # process-wide: torch has no per-model setting
        self.loaded: LoadedReranker
        self.head: RerankHead
        self.loaded, self.head = load_reranker(config, kind)
        self.precision: Precision = pick_precision(config.dtype, self.loaded.device)
        self.max_length = chosen_reranker_length(config, self.loaded)
        # The weights' own copy of the fast tokenizer, shared by every reranker of them (copying a
        # large vocabulary takes seconds); its truncation state is only changed under its lock.
        self._tokenizer = self.loaded.pair_tokenizer
        self._tokenizer_lock = self.loaded.tokenizer_lock
        self._inference_lock = registry.inference_lock(self.loaded)
        template = self.head.template
        self._frame: tuple[list[int], list[int]] = ([], [])
        if template is not None:
            self._frame = (self._plain_ids(template.prefix), self._plain_ids(template.suffix))
        self._check_room(kind)
        scale = score_scale(kind, "sigmoid" if kind == "llm" else self.head.activation)
        self._facts = RerankerFacts(
            model=config.model,
            kind=kind,
            score_scale=scale,
            max_length=self.max_length,
            position_limit=self.loaded.position_limit,
            fingerprint=self._fingerprint(),
            instructed=kind == "llm",
            runtime=self.precision.runtime(self.loaded.device),
        )

    def _check_room(self, kind: str) -> None:
        """Refuse a max_length that the frame of every pair fills: no query would ever fit."""
        if kind == "llm":
            frame, what = len(self._frame[0]) + len(self._frame[1]), "its template's prefix and suffix"
        else:
            frame, what = self._tokenizer.num_special_tokens_to_add(True), "the special tokens of a pair"
        if self.max_length <= frame + 1:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for a query and a candidate: {what} take "
                f"{frame} tokens of {self.config.model!r}; use at least {frame + 2}"
            )

    @property
    def facts(self) -> RerankerFacts:
        return self._facts

    @property
    def template(self) -> LlmTemplate | None:
        """An LLM reranker's template (None for a cross-encoder): what frames each pair."""
        return self.head.template

    def _fingerprint(self) -> dict[str, str]:
        template = self.head.template
        return {
            "backend": "local",
            "model": self.config.model,
            "kind": self.loaded.kind,
            "weights": weights_stamp(self.loaded.path),
            "dtype": self.precision.name,
            "max_length": str(self.max_length),
            "activation": str(self.head.activation),
            "label": str(self.head.label_index),
            "template": ""
            if template is None
            else hashlib.sha256(template.model_dump_json().encode()).hexdigest()[:16],
        }

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
        if self.loaded.kind == "llm":
            return self._score_llm(queries, self._llm_tokens(queries, documents, instruction), show_progress)
        token_ids, type_ids = self._pair_tokens(queries, documents)
        batches = plan_batches([len(ids) for ids in token_ids], self.config.batch_tokens)
        with tqdm(total=len(token_ids), unit="pair", desc="Reranking", disable=not show_progress) as progress:
            for batch in batches:
                scores[batch] = run_halving(
                    batch,
                    lambda part: self._forward(
                        [token_ids[p] for p in part],
                        None if type_ids is None else [type_ids[p] for p in part],
                    ),
                    self.device,
                    what="pair",
                    tokens=lambda p: len(token_ids[p]),
                )
                progress.update(len(batch))
        return scores

    def _score_llm(
        self, queries: Sequence[str], token_ids: list[list[int]], show_progress: bool
    ) -> np.ndarray:
        """The pairs of each query from their shared tokens on (:mod:`.prefix_sharing`)."""
        with tqdm(total=len(token_ids), unit="pair", desc="Reranking", disable=not show_progress) as progress:
            return score_sharing_prefixes(
                token_ids,
                queries,
                batch_tokens=self.config.batch_tokens,
                run=lambda positions, forward: run_halving(
                    positions, forward, self.device, what="pair", tokens=lambda p: len(token_ids[p])
                ),
                prefix=self._prefix_state,
                tails=self._tail_scores,
                progress=progress,
            )

    def _prefix_state(self, ids: list[int]) -> KeyValues:
        with self._inference_lock, torch.inference_mode(), self.precision.context():
            return prefix_state(self.loaded.module.get_decoder(), ids, self.device)

    def _tail_scores(self, state: KeyValues, shared: int, tails: list[list[int]]) -> np.ndarray:
        """P(yes) = sigmoid(logit(yes) - logit(no)) at each pair's last token, for those two only."""
        head = self.head
        assert head.judge is not None
        with self._inference_lock, torch.inference_mode():
            decoder = self.loaded.module.get_decoder()
            with self.precision.context():
                hidden = tail_hidden(decoder, state, shared, tails, self.loaded.pad_token_id, self.device)
            margin = hidden.float() @ head.judge.to(hidden.device) + head.judge_bias
            return torch.sigmoid(margin).cpu().numpy().astype(np.float32, copy=False)

    # -- tokens -------------------------------------------------------------------------------------

    def _plain_ids(self, text: str) -> list[int]:
        with self._tokenizer_lock:
            return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def _check_queries(
        self, queries: Sequence[str], room: int, what: str, counted: Sequence[str] | None = None
    ) -> None:
        """Refuse a query that alone leaves no room for any candidate: only candidates are cut.

        ``counted`` is what each query takes in the pair (an LLM's body before the candidate), if
        more than the query; the message names the query the caller gave.
        """
        texts = dict(zip(counted if counted is not None else queries, queries, strict=True))
        with self._tokenizer_lock:
            encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        for query, encoding in zip(texts.values(), encodings, strict=True):
            if len(encoding.ids) >= room:
                raise ValueError(
                    f"the query alone takes {len(encoding.ids)} tokens and max_length={self.max_length} "
                    f"leaves {room} for the query and each candidate ({what}): no candidate would be seen. "
                    f"Shorten the query (it begins {query[:40]!r}) or raise max_length (this model allows "
                    f"{self.loaded.position_limit})"
                )

    def _pair_tokens(
        self, queries: Sequence[str], documents: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]]]:
        """The tokenizer's pair encoding, the candidate side truncated to fit ``max_length``."""
        specials = self._tokenizer.num_special_tokens_to_add(True)
        self._check_queries(queries, self.max_length - specials, f"after its {specials} special tokens")
        with self._tokenizer_lock:
            self._tokenizer.enable_truncation(self.max_length, strategy="only_second")
            try:
                encodings = self._tokenizer.encode_batch(list(zip(queries, documents, strict=True)))
            finally:
                self._tokenizer.no_truncation()
        cut = sum(1 for encoding in encodings if encoding.overflowing)
        self._warn_cut(cut, len(encodings), "query and special tokens included")
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def _llm_tokens(
        self, queries: Sequence[str], documents: Sequence[str], instruction: str | None
    ) -> list[list[int]]:
        """``prefix + body + suffix`` ids, the body (ending with the candidate) cut to fit, with the
        query refused when it leaves no room and the cut candidates reported."""
        template = self.head.template
        assert template is not None
        room = self.max_length - len(self._frame[0]) - len(self._frame[1])
        instruction = template.default_instruction if instruction is None else instruction
        heads = [template.body.format(instruction=instruction, query=q, document="") for q in queries]
        self._check_queries(
            queries, room, "after the template; the instruction counts with the query", counted=heads
        )
        rows, cut = self.llm_pair_ids(queries, documents, instruction)
        self._warn_cut(cut, len(rows), "template, instruction and query included")
        return rows

    def _warn_cut(self, cut: int, total: int, included: str) -> None:
        """The one truncation warning of the candidates, saying what the length counted."""
        kept = f"{included}; the query is kept whole"
        warn_truncated(cut, total, self.max_length, self.loaded.position_limit, what="candidates", kept=kept)

    def llm_pair_ids(
        self, queries: Sequence[str], documents: Sequence[str], instruction: str | None
    ) -> tuple[list[list[int]], int]:
        """Each pair's ids as an LLM reranker reads them (``prefix + body + suffix``, the body cut to
        leave the frame whole), and how many bodies were cut: what scoring runs and what a server's
        ``usage`` counts, from one place."""
        template = self.head.template
        assert template is not None
        prefix, suffix = self._frame
        room = self.max_length - len(prefix) - len(suffix)
        said = template.default_instruction if instruction is None else instruction
        bodies = [
            template.body.format(instruction=said, query=q, document=d)
            for q, d in zip(queries, documents, strict=True)
        ]
        with self._tokenizer_lock:
            encodings = self._tokenizer.encode_batch(bodies, add_special_tokens=False)
        cut = sum(1 for encoding in encodings if len(encoding.ids) > room)
        return [prefix + encoding.ids[:room] + suffix for encoding in encodings], cut

    # -- forward ------------------------------------------------------------------------------------

    def _inputs(self, batch: list[list[int]], segments: list[list[int]] | None) -> dict[str, Any]:
        loaded = self.loaded
        return padded_inputs(
            batch,
            pad_token_id=loaded.pad_token_id,
            padding_side=loaded.padding_side,
            device=loaded.device,
            positions=loaded.needs_position_ids,
            segments=segments if loaded.token_type_ids else None,
        )

    def _forward(self, batch: list[list[int]], segments: list[list[int]] | None) -> np.ndarray:
        loaded, head = self.loaded, self.head
        inputs = self._inputs(batch, segments)
        with self._inference_lock, torch.inference_mode(), self.precision.context():
            logits = loaded.module(**inputs).logits.float()[:, head.label_index]
            scores = torch.sigmoid(logits) if head.activation == "sigmoid" else logits
        return scores.cpu().numpy().astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return (
            f"LocalReranker(model={self.config.model!r}, kind={self.loaded.kind!r}, device={self.device}, "
            f"dtype={self.precision.describe()!r})"
        )
