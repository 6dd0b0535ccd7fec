"""The encoder: texts in, float32 vectors out, in the caller's order.

The pipeline is instructions -> tokenise once -> plan batches by tokens -> forward -> pool ->
normalise -> restore order. The side of each text (query or document) is explicit in the method
name, because an instruction on the wrong side is a silent quality loss, not an error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from . import registry
from .batching import plan_batches
from .config import EncoderConfig
from .instructions import TaskLike
from .loading import LoadedModel
from .pooling import pool

logger = logging.getLogger("qzhou_plugins")

PROGRESS_THRESHOLD = 256
"""Calls with at least this many texts show a progress bar unless told otherwise."""


class EncoderOutOfMemoryError(RuntimeError):
    """Even a single text does not fit in the device's memory."""


def validate_texts(texts: Any, *, what: str = "texts") -> list[str]:
    """Check every input before any model work, naming the positions of the bad ones.

    A lone string is refused rather than iterated character by character; ``None``, non-strings and
    blank strings are refused because each would otherwise become a meaningless vector.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what} must be a list of strings, not a single {type(texts).__name__}")
    if not isinstance(texts, Sequence):
        try:
            texts = list(texts)
        except TypeError:
            raise TypeError(f"{what} must be a list of strings, not {type(texts).__name__}") from None
    nones = [i for i, t in enumerate(texts) if t is None]
    others = [i for i, t in enumerate(texts) if t is not None and not isinstance(t, str)]
    if nones or others:
        parts = []
        if nones:
            parts.append(f"None at position(s) {_positions(nones)}")
        if others:
            kinds = sorted({type(texts[i]).__name__ for i in others})
            parts.append(f"non-string ({', '.join(kinds)}) at position(s) {_positions(others)}")
        raise TypeError(f"{what} must all be strings: {'; '.join(parts)}")
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise ValueError(f"{what} must not be empty or whitespace-only: position(s) {_positions(blank)}")
    return list(texts)


def _positions(positions: list[int], shown: int = 10) -> str:
    head = ", ".join(str(p) for p in positions[:shown])
    return head + (f", ... ({len(positions)} in all)" if len(positions) > shown else "")


class Encoder:
    """Embeds texts with one model; the weights come from the process-wide registry.

    Construct it with an :class:`EncoderConfig` or its fields as keywords
    (``Encoder(model="...", batch_tokens=8192)``). Two encoders of the same checkpoint share one copy
    of the weights; :meth:`shared` returns the very same encoder for the same configuration.
    """

    def __init__(self, config: EncoderConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise TypeError("pass either an EncoderConfig or its fields as keywords, not both")
        self.config = config if config is not None else EncoderConfig(**options)
        self._loaded: LoadedModel = registry.get_model(self.config)
        limit = self._loaded.position_limit
        if self.config.max_length is not None and self.config.max_length > limit:
            raise ValueError(
                f"max_length={self.config.max_length} exceeds what {self.config.model!r} can attend "
                f"to ({limit} positions)"
            )
        self.max_length: int = self.config.max_length or self._loaded.default_max_length
        self.pooling = self.config.pooling or self._loaded.default_pooling
        # A private copy of the fast tokenizer, set to truncate at our max_length: the Rust tokenizer
        # holds truncation state and is not safe to share between threads, so it is also guarded.
        self._tokenizer = Tokenizer.from_str(self._loaded.tokenizer.backend_tokenizer.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_length)
        self._tokenizer_lock = threading.Lock()
        self._inference_lock = registry.inference_lock(self._loaded)

    @classmethod
    def shared(cls, config: EncoderConfig | None = None, **options: Any) -> Encoder:
        """The process-wide encoder for this configuration (created on first use)."""
        if config is not None and options:
            raise TypeError("pass either an EncoderConfig or its fields as keywords, not both")
        return registry.shared_encoder(config if config is not None else EncoderConfig(**options))

    # -- facts --------------------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        """Length of every vector this encoder returns."""
        return self._loaded.dimension

    @property
    def model_name(self) -> str:
        return self.config.model

    @property
    def family(self) -> str:
        """``qzhou``, ``decoder`` or ``encoder``: decides padding side and default instructions."""
        return self._loaded.family

    @property
    def device(self) -> torch.device:
        return self._loaded.device

    @property
    def dtype(self) -> torch.dtype:
        return self._loaded.dtype

    def prefixes(self, task: TaskLike = None) -> tuple[str, str]:
        """The exact (query, document) text this model puts before inputs for ``task``."""
        return self._loaded.prompt_style.prefixes(task)

    def instruction_prefix(self, instruction: str | None) -> str:
        """The text placed before inputs for a raw ``instruction`` in this model's format."""
        return self._loaded.prompt_style.format(instruction)

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
        """:meth:`encode_queries` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.encode_queries, texts, task, show_progress=show_progress)

    async def aencode_documents(
        self, texts: Sequence[str], task: TaskLike = None, *, show_progress: bool | None = None
    ) -> np.ndarray:
        """:meth:`encode_documents` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.encode_documents, texts, task, show_progress=show_progress)

    async def aencode(
        self, texts: Sequence[str], instruction: str | None = None, *, show_progress: bool | None = None
    ) -> np.ndarray:
        """:meth:`encode` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.encode, texts, instruction, show_progress=show_progress)

    def encode_with_prefix(
        self, texts: Sequence[str], prefix: str, *, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed ``prefix + text`` for each text; the other encode methods choose the prefix."""
        checked = validate_texts(texts)
        return self.encode_prefixed([prefix + text for text in checked], show_progress=show_progress)

    def encode_prefixed(self, texts: list[str], *, show_progress: bool | None = None) -> np.ndarray:
        """Embed texts that already carry their prefixes (validated by the caller)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        token_ids = self.tokenize(texts)
        lengths = [len(ids) for ids in token_ids]
        batches = plan_batches(lengths, self.config.batch_tokens)
        show = show_progress if show_progress is not None else self.config.show_progress
        if show is None:
            show = len(texts) >= PROGRESS_THRESHOLD
        output = np.empty((len(texts), self.dimension), dtype=np.float32)
        with tqdm(total=len(texts), unit="text", desc="Embedding", disable=not show) as progress:
            for batch in batches:
                output[batch] = self._run([token_ids[p] for p in batch])
                progress.update(len(batch))
        return output

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (special tokens included), truncated to ``max_length`` with a warning."""
        with self._tokenizer_lock:
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        truncated = sum(1 for encoding in encodings if encoding.overflowing)
        if truncated:
            logger.warning(
                "%d of %d texts were longer than %d tokens and were truncated to %d tokens (instruction "
                "included); raise max_length (this model allows up to %d) to keep more.",
                truncated,
                len(texts),
                self.max_length,
                self.max_length,
                self._loaded.position_limit,
            )
        return [encoding.ids for encoding in encodings]

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        """One planned batch, split in halves and retried if the device runs out of memory."""
        try:
            return self._forward(batch)
        except torch.OutOfMemoryError:
            width = max(len(ids) for ids in batch)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:
                raise EncoderOutOfMemoryError(
                    f"a single text of {width} tokens does not fit in {self.device} memory; lower "
                    "max_length or use a device with more memory"
                ) from None
            logger.warning(
                "Out of memory on a batch of %d texts x %d tokens; splitting it in two and retrying. "
                "Lower batch_tokens to avoid the retry.",
                len(batch),
                width,
            )
            half = len(batch) // 2
            return np.concatenate([self._run(batch[:half]), self._run(batch[half:])])

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        loaded = self._loaded
        width = max(len(ids) for ids in batch)
        input_ids = np.full((len(batch), width), loaded.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            span = slice(width - len(ids), width) if loaded.padding_side == "left" else slice(0, len(ids))
            input_ids[row, span] = ids
            mask[row, span] = 1
        inputs: dict[str, Any] = {
            "input_ids": torch.from_numpy(input_ids).to(loaded.device),
            "attention_mask": torch.from_numpy(mask).to(loaded.device),
        }
        if loaded.needs_position_ids:
            # Count positions from each text's first real token, so that left padding does not shift
            # a text's rotary positions: its vector is then the same alone or in any batch.
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
            inputs["use_cache"] = False
        if loaded.bidirectional:
            inputs["is_causal"] = False
        with self._inference_lock, torch.inference_mode():
            hidden = loaded.module(**inputs).last_hidden_state
            vectors = pool(hidden, inputs["attention_mask"], self.pooling)
            if self.config.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return (
            f"Encoder(model={self.config.model!r}, family={self.family!r}, dimension={self.dimension}, "
            f"device={self.device}, dtype={str(self.dtype).removeprefix('torch.')})"
        )
