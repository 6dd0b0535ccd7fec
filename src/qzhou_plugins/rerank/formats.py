"""What rerankers' model cards publish, as data: LLM templates, activations and score scales.

The one place that knows a reranker family's strings. Code elsewhere reads these records and never
tests a model's name: a new LLM reranker is a new :class:`~qzhou_plugins.config.LlmTemplate` here
(or the caller's own ``template=``), not a branch in the runtime.
"""

from __future__ import annotations

import math

from ..config import LlmTemplate

__all__ = [
    "LLM_TEMPLATES",
    "LOWEST_SCORES",
    "QWEN3_RERANKER",
    "SCORE_SCALES",
    "ST_ACTIVATIONS",
    "lowest_score",
    "score_scale",
]

QWEN3_RERANKER = LlmTemplate(
    prefix=(
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
        'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    ),
    body="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    yes_token="yes",
    no_token="no",
    default_instruction="Given a web search query, retrieve relevant passages that answer the query",
)
"""Qwen3-Reranker (0.6B / 4B / 8B), exactly as its model card formats a pair."""

LLM_TEMPLATES: dict[str, LlmTemplate] = {"qwen3": QWEN3_RERANKER}
"""The built-in template of each transformers ``model_type`` whose rerankers are known."""

ST_ACTIVATIONS: dict[str, str] = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
}
"""sentence-transformers' saved activation classes and what they are here."""

SCORE_SCALES: dict[str, str] = {"embedding": "cosine", "sigmoid": "probability", "identity": "logit"}
"""The scale of a score, by reranker kind (embedding) or by activation (the other kinds)."""

LOWEST_SCORES: dict[str, float] = {"cosine": -1.0, "probability": 0.0, "logit": -1e30}
"""The score of an empty candidate on each scale: no real score is lower (a logit's floor is finite,
so that it stays a JSON number)."""


def score_scale(kind: str, activation: str | None) -> str:
    """``cosine`` for an embedding reranker; ``probability`` or ``logit`` by the activation."""
    return SCORE_SCALES["embedding" if kind == "embedding" else (activation or "sigmoid")]


def lowest_score(scale: str) -> float:
    """The score below every real one on ``scale``."""
    return LOWEST_SCORES.get(scale, -math.inf)
