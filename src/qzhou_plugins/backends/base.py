"""The seam between the encoder and a model: prefixed texts in, float32 rows out.

Everything above the seam (instructions and sides, validation, the caller's order, the embedding
cache, every adapter) is the same whichever runtime computes the vectors; everything below it
(tokenising, batching by tokens, the forward pass, pooling, out-of-memory retries, or a request to a
served model) is the backend's business. A new runtime is a new class with the members of
:class:`Backend`; nothing above the seam changes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..instructions import PromptStyle


class ModelLoadError(RuntimeError):
    """The model cannot be used as it is (a checkpoint or a file); the message says why and what to do.

    Defined at the seam, not in a runtime, so that catching it imports no runtime (torch, llama.cpp).
    """


class EncoderOutOfMemoryError(RuntimeError):
    """Even a single text does not fit in the device's memory."""


def chosen_max_length(asked: int | None, model: str, limit: int, default: int) -> int:
    """The ``max_length`` a backend truncates at: what the user asked, refused past ``limit``.

    Checked at load, so a length the model cannot attend to fails once with its name instead of as
    an index error inside every forward pass.
    """
    if asked is not None and asked > limit:
        raise ValueError(f"max_length={asked} exceeds what {model!r} can attend to ({limit} positions)")
    return asked or default


def warn_truncated(
    truncated: int,
    total: int,
    max_length: int,
    position_limit: int,
    *,
    what: str = "texts",
    kept: str = "instruction included",
) -> None:
    """The one warning of every runtime that cuts inputs to ``max_length``: truncation is never silent.

    ``what`` names the inputs (texts, candidates) and ``kept`` what the length counts.
    """
    if truncated:
        logging.getLogger("qzhou_plugins").warning(
            "%d of %d %s were longer than %d tokens and were truncated to %d tokens (%s); raise "
            "max_length (this model allows up to %d) to keep more.",
            truncated,
            total,
            what,
            max_length,
            max_length,
            kept,
            position_limit,
        )


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` scaled to length 1 row by row (a zero row stays zero), so dot product = cosine."""
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)


@dataclass(frozen=True)
class BackendFacts:
    """What the layers above the seam need to know about the model behind it."""

    model: str
    """The model name as the user gave it (what gets persisted)."""
    dimension: int
    max_length: int
    """Tokens per text (prefix included) before truncation."""
    position_limit: int
    """The most tokens the model can attend to: the ceiling of ``max_length``."""
    prompt_style: PromptStyle
    """How this model turns a task into query and document prefixes."""
    family: str
    """The name of the model's family record (:mod:`qzhou_plugins.families`: ``qzhou``,
    ``qwen3-embedding``, ``gte-qwen2``, ``e5-mistral``, ``decoder``, ``bert``), or ``served`` for a
    served model whose family is not known: decides attention, pooling, padding and instructions."""
    pooling: str
    normalized: bool
    """Whether rows come back L2-normalised (dot product = cosine)."""
    fingerprint: dict[str, str] = field(default_factory=dict)
    """Everything that decides the vectors (weights identity, dtype, pooling, ...), as text: equal
    fingerprints give equal vectors for equal prefixed texts, which is what a cache may rely on."""
    source_model: str | None = None
    """The checkpoint the model was converted from (a GGUF file records it), or None: what a Chroma
    collection compares in place of ``model``, so that a file and its source may share one."""
    vector_family: str = "reference"
    """Which vectors may share a collection: ``reference`` for the torch encoder and every runtime
    measured interchangeable with it, another name (``gguf-q8_0``) for vectors that are not."""
    runtime: str | None = None
    """Where and in what precision a local model computes (``cpu, bfloat16 (autocast over float32
    weights)``), for banners and results; None where this process does not compute (a server)."""


@runtime_checkable
class Backend(Protocol):
    """A runtime that turns prefixed texts into vectors."""

    @property
    def facts(self) -> BackendFacts:
        """The model's facts; constant for the life of the backend."""
        ...

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """One float32 row per text, in the order given.

        The texts are validated and already carry their prefixes: the backend adds nothing and
        drops nothing. An empty list gives a ``(0, dimension)`` array.
        """
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        """Tokens of each text as the model sees it (special tokens included), or None if unknown.

        The encoder uses it to refuse an instruction that alone fills ``max_length``: every text
        would then be cut to the instruction, and all would get one and the same vector.
        """
        ...


@dataclass(frozen=True)
class RerankerFacts:
    """What the layers above a reranker's seam need to know about it."""

    model: str
    kind: str
    """``embedding`` (cosine of two vectors), ``cross-encoder`` or ``llm`` (yes/no judge)."""
    score_scale: str
    """``cosine`` (-1 to 1), ``probability`` (0 to 1) or ``logit`` (any real number)."""
    max_length: int
    """Tokens of one pair (template included) before the candidate side is truncated."""
    position_limit: int
    fingerprint: dict[str, str] = field(default_factory=dict)
    """Everything that decides the scores, as text."""
    instructed: bool = False
    """Whether the reranker takes an ``instruction`` (an LLM reranker's or an embedding model's)."""
    runtime: str | None = None
    """As :attr:`BackendFacts.runtime`."""


@runtime_checkable
class RerankBackend(Protocol):
    """A runtime that scores (query, document) pairs: cross-encoders and LLM rerankers.

    An embedding reranker needs no runtime of its own: it is the encoder's cosine
    (:mod:`qzhou_plugins.rerank`).
    """

    @property
    def facts(self) -> RerankerFacts:
        """The reranker's facts; constant for the life of the backend."""
        ...

    def score_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """One float32 score per pair ``(queries[i], documents[i])``, on the facts' scale.

        The texts are validated and distinct pairs. ``instruction`` is the instruction an LLM reranker
        puts in its template (None: the template's default); a cross-encoder takes none.
        """
        ...
