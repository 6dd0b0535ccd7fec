"""The encoder: texts in, float32 vectors out, in the caller's order.

validate -> side prefixes (from the task) -> the optional embedding cache -> ``backend.embed``.
The side of each text (query or document) is explicit in the method name, because an instruction on
the wrong side is a silent quality loss, not an error. How vectors are computed is the backend's
business (:mod:`qzhou_plugins.backends`): the encoder and every adapter above it are the same for a
model in this process and for a served one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .backends import Backend, BackendFacts, backend_for
from .config import EncoderConfig
from .instructions import TaskLike
from .validation import check_flag, validate_texts

PROGRESS_THRESHOLD = 256
"""Jobs of at least this many texts show a progress bar unless told otherwise."""


def wants_progress(requested: bool | None, total: int | None, default: bool | None = None) -> bool:
    """Whether to show a progress bar: as asked, else as configured, else for long jobs only."""
    check_flag(requested, what="show_progress")
    for choice in (requested, default):
        if choice is not None:
            return choice
    return total is None or total >= PROGRESS_THRESHOLD


def distinct_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray | None]:
    """The distinct texts of ``texts`` in first-seen order, and where each of ``texts`` is among them
    (None when every text is distinct, so the common case copies nothing).

    Embedding each distinct text once is what makes equal texts get exactly equal vectors: the float
    sums of a forward pass depend on the batch a text lands in, so two copies of one text embedded in
    two batches can differ in their last bits, and a reranker would then break a tie that is not one.
    It also saves the work on corpora with repeated chunks (boilerplate, headers, duplicates).
    """
    position: dict[str, int] = {}
    inverse = np.fromiter(
        (position.setdefault(text, len(position)) for text in texts), dtype=np.intp, count=len(texts)
    )
    if len(position) == len(texts):
        return list(texts), None
    return list(position), inverse


def per_text_prefixes(prefix: str | Sequence[str], count: int, what: str = "texts") -> list[str]:
    """``prefix`` as one prefix per text: one string for all of them, or exactly one each."""
    prefixes = [prefix] * count if isinstance(prefix, str) else list(prefix)
    if len(prefixes) != count:
        raise ValueError(f"{len(prefixes)} prefixes for {count} {what}")
    return prefixes


class Encoder:
    """Embeds texts with one model through one backend.

    Construct it with an :class:`EncoderConfig`, a mapping of its fields, or its fields as keywords
    (``Encoder(model="...", batch_tokens=8192)``); or around a ``backend=`` of your own. Two
    encoders of the same checkpoint share one copy of the weights; :meth:`shared` returns the very
    same encoder for the same configuration.
    """

    def __init__(
        self,
        config: EncoderConfig | Mapping[str, Any] | None = None,
        *,
        backend: Backend | None = None,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise TypeError("pass either an EncoderConfig or its fields as keywords, not both")
        if isinstance(config, Mapping):
            config = EncoderConfig(**config)
        elif config is not None and not isinstance(config, EncoderConfig):
            raise TypeError(
                f"Encoder takes an EncoderConfig, a mapping of its fields or keywords, not "
                f"{type(config).__name__}"
            )
        if config is None and backend is not None and "model" not in options:
            options["model"] = backend.facts.model
        self.config: EncoderConfig = config if config is not None else EncoderConfig(**options)
        self.backend: Backend = backend if backend is not None else backend_for(self.config)
        self._checked_prefixes: set[str] = set()
        self._cache: Any = None
        if self.config.cache_dir is not None:
            from .cache import EmbeddingCache

            facts = self.backend.facts
            self._cache = EmbeddingCache(self.config.cache_dir, facts.fingerprint, facts.dimension)

    @classmethod
    def shared(cls, config: EncoderConfig | Mapping[str, Any] | None = None, **options: Any) -> Encoder:
        """The process-wide encoder for this configuration (created on first use)."""
        if config is not None and options:
            raise TypeError("pass either an EncoderConfig or its fields as keywords, not both")
        if not isinstance(config, EncoderConfig):
            config = EncoderConfig(**(dict(config) if isinstance(config, Mapping) else options))
        with _shared_lock:
            encoder = _shared.get(config)
            if encoder is None:
                encoder = cls(config)
                _shared[config] = encoder
            return encoder

    # -- facts --------------------------------------------------------------------------------------

    @property
    def facts(self) -> BackendFacts:
        return self.backend.facts

    @property
    def dimension(self) -> int:
        """Length of every vector this encoder returns."""
        return self.facts.dimension

    @property
    def model_name(self) -> str:
        return self.config.model

    @property
    def family(self) -> str:
        """The model family's name (``qzhou``, ``qwen3-embedding``, ... see :mod:`qzhou_plugins.families`)."""
        return self.facts.family

    @property
    def pooling(self) -> str:
        return self.facts.pooling

    @property
    def max_length(self) -> int:
        return self.facts.max_length

    @property
    def device(self) -> Any:
        """The torch device of a local backend (None for a backend that has none)."""
        return getattr(self.backend, "device", None)

    @property
    def dtype(self) -> Any:
        return getattr(self.backend, "dtype", None)

    @property
    def cache(self) -> Any:
        """The embedding cache (``cache_dir``), or None."""
        return self._cache

    def prefixes(
        self,
        task: TaskLike = None,
        *,
        query_instruction: str | None = None,
        document_instruction: str | None = None,
    ) -> tuple[str, str]:
        """The exact (query, document) text this model puts before inputs for ``task``.

        An explicit ``query_instruction`` / ``document_instruction`` overrides the task on its side
        (``""``: none); see :meth:`~qzhou_plugins.instructions.PromptStyle.side_prefixes`.
        """
        return self.facts.prompt_style.side_prefixes(
            task, query_instruction=query_instruction, document_instruction=document_instruction
        )

    def instruction_prefix(self, instruction: str | None) -> str:
        """The text placed before inputs for a raw ``instruction`` in this model's format."""
        return self.facts.prompt_style.format(instruction)

    # -- encoding -----------------------------------------------------------------------------------

    def encode_queries(
        self, texts: Sequence[str], task: TaskLike = None, *, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed search queries (or the first text of a pair): the side that carries the instruction."""
        query_prefix, _ = self.prefixes(task)
        return self.encode_with_prefix(texts, query_prefix, show_progress=show_progress)

    def encode_documents(
        self, texts: Sequence[str], task: TaskLike = None, *, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed passages to be searched: instructed only for symmetric tasks."""
        _, document_prefix = self.prefixes(task)
        return self.encode_with_prefix(texts, document_prefix, show_progress=show_progress)

    def encode(
        self, texts: Sequence[str], instruction: str | None = None, *, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed texts with an explicit instruction (or none): no task rule is applied."""
        prefix = self.instruction_prefix(instruction)
        return self.encode_with_prefix(texts, prefix, show_progress=show_progress)

    async def aencode_queries(
        self, texts: Sequence[str], task: TaskLike = None, *, show_progress: bool | None = None
    ) -> np.ndarray:
        """:meth:`encode_queries` without blocking the event loop."""
        query_prefix, _ = self.prefixes(task)
        return await self.aencode_with_prefix(texts, query_prefix, show_progress=show_progress)

    async def aencode_documents(
        self, texts: Sequence[str], task: TaskLike = None, *, show_progress: bool | None = None
    ) -> np.ndarray:
        """:meth:`encode_documents` without blocking the event loop."""
        _, document_prefix = self.prefixes(task)
        return await self.aencode_with_prefix(texts, document_prefix, show_progress=show_progress)

    async def aencode(
        self, texts: Sequence[str], instruction: str | None = None, *, show_progress: bool | None = None
    ) -> np.ndarray:
        """:meth:`encode` without blocking the event loop."""
        prefix = self.instruction_prefix(instruction)
        return await self.aencode_with_prefix(texts, prefix, show_progress=show_progress)

    async def aencode_with_prefix(
        self,
        texts: Sequence[str],
        prefix: str | Sequence[str],
        *,
        show_progress: bool | None = None,
        what: str = "texts",
    ) -> np.ndarray:
        """:meth:`encode_with_prefix` without blocking the event loop.

        A backend with an ``aembed`` coroutine (a served model) is awaited directly, so many
        concurrent calls are many requests in flight; a local model runs in a worker thread, where
        its forward passes queue on the model's lock, not on the loop.
        """
        check_flag(show_progress, what="show_progress")
        aembed = getattr(self.backend, "aembed", None)
        if aembed is None or self._cache is not None:
            return await asyncio.to_thread(
                self.encode_with_prefix, texts, prefix, show_progress=show_progress, what=what
            )
        unique, inverse = distinct_texts(self._prefixed(texts, prefix, what))
        vectors = await aembed(unique)
        return vectors if inverse is None else vectors[inverse]  # type: ignore[no-any-return]

    def encode_with_prefix(
        self,
        texts: Sequence[str],
        prefix: str | Sequence[str],
        *,
        show_progress: bool | None = None,
        what: str = "texts",
    ) -> np.ndarray:
        """Embed ``prefix + text`` for each text; ``prefix`` is one string or one per text.

        Every edge comes through here: the texts are validated (``what`` names them in errors), each
        distinct prefix is checked to leave room for text under ``max_length``, and each distinct
        prefixed text is embedded once (:func:`distinct_texts`): equal texts get equal vectors.
        """
        unique, inverse = distinct_texts(self._prefixed(texts, prefix, what))
        show = wants_progress(show_progress, len(unique), self.config.show_progress)
        if self._cache is not None:
            vectors = self._cache.embed(
                unique, lambda missing: self.backend.embed(missing, show_progress=show)
            )
        else:
            vectors = self.backend.embed(unique, show_progress=show)
        return vectors if inverse is None else vectors[inverse]

    def _prefixed(self, texts: Sequence[str], prefix: str | Sequence[str], what: str) -> list[str]:
        """Validated texts with their prefixes, each distinct prefix checked against max_length."""
        checked = validate_texts(texts, what=what)
        prefixes = per_text_prefixes(prefix, len(checked), what)
        for distinct in set(prefixes):
            self._check_prefix(distinct)
        return [p + text for p, text in zip(prefixes, checked, strict=True)]

    def _check_prefix(self, prefix: str) -> None:
        """Refuse an instruction that alone fills ``max_length``: every text would get its vector."""
        if not prefix or prefix in self._checked_prefixes:
            return
        counted = self.backend.count_tokens([prefix])
        if counted is not None and counted[0] >= self.max_length:
            raise ValueError(
                f"the instruction alone takes {counted[0]} tokens and max_length is {self.max_length}: "
                f"nothing of any text would be kept, and every text would get the same vector. Raise "
                f"max_length (this model allows {self.facts.position_limit}) or shorten the instruction "
                f"({prefix[:60]!r}...)"
            )
        self._checked_prefixes.add(prefix)

    def __repr__(self) -> str:
        return (
            f"Encoder(model={self.config.model!r}, family={self.family!r}, dimension={self.dimension}, "
            f"backend={self.backend!r})"
        )


_shared_lock = threading.RLock()
_shared: dict[EncoderConfig, Encoder] = {}


def release_all() -> None:
    """Forget every shared encoder and loaded model so that their memory can be freed."""
    from .backends.local.registry import release_weights

    with _shared_lock:
        _shared.clear()
    release_weights()
