"""The local backend: a model in this process, computing vectors with torch.

tokenise once -> plan batches by tokens -> pad (left for decoders, with positions counted from each
text's first real token) -> forward -> pool in fp32 -> normalise; a batch that runs out of memory is
split in two and retried. The weights come from the process-wide registry, so every backend of one
checkpoint shares them; what only changes how texts are encoded (max_length, pooling, batch budget)
is per backend.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from ...config import EncoderConfig
from ..base import BackendFacts, EncoderOutOfMemoryError, chosen_max_length, warn_truncated
from . import registry
from .batching import plan_batches
from .family_settings import encoding_tokenizer
from .loading import LoadedModel, weights_stamp
from .pooling import pool
from .precision import OnDevice, Precision, pick_precision

logger = logging.getLogger("qzhou_plugins")

__all__ = ["MOSTLY_UNKNOWN", "EncoderOutOfMemoryError", "LocalBackend", "padded_inputs", "run_halving"]

MOSTLY_UNKNOWN = 0.5
"""A text with at least this share of unknown tokens is reported: its vector says little of it."""
EXCERPT = 40
"""Characters of a reported text shown in a warning."""


class LocalBackend(OnDevice):
    """Embeds prefixed texts with a model loaded in this process (see the module docstring)."""

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        if config.threads is not None:
            torch.set_num_threads(config.threads)  # process-wide: torch has no per-model setting
        self.loaded: LoadedModel = registry.get_model(config)
        self.precision: Precision = pick_precision(config.dtype, self.loaded.device)
        self.max_length: int = chosen_max_length(
            config.max_length, config.model, self.loaded.position_limit, self.loaded.default_max_length
        )
        # A private copy of the fast tokenizer, set to truncate at our max_length: the Rust tokenizer
        # holds truncation state and is not safe to share between threads, so it is also guarded.
        self._tokenizer = encoding_tokenizer(self.loaded.tokenizer, self.loaded.end_token, config.model)
        specials = self._tokenizer.num_special_tokens_to_add(False)
        if self.max_length <= specials:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for text: {config.model!r} adds {specials} "
                f"special token(s) to every text; use at least {specials + 1}"
            )
        self._tokenizer.enable_truncation(self.max_length)
        self._tokenizer_lock = threading.Lock()
        self._inference_lock = registry.inference_lock(self.loaded)
        self._unknown_id = _unknown_token_id(self._tokenizer)
        self._facts = BackendFacts(
            model=config.model,
            dimension=self.loaded.dimension,
            max_length=self.max_length,
            position_limit=self.loaded.position_limit,
            prompt_style=self.loaded.prompt_style,
            family=self.loaded.family,
            pooling=config.pooling or self.loaded.default_pooling,
            normalized=config.normalize,
            fingerprint=self._fingerprint(),
            runtime=self.precision.runtime(self.loaded.device),
        )

    @property
    def facts(self) -> BackendFacts:
        return self._facts

    def _fingerprint(self) -> dict[str, str]:
        """What decides the vectors; the weights by their files' names, sizes and times."""
        return {
            "backend": "local",
            "model": self.config.model,
            "weights": weights_stamp(self.loaded.path),
            "dtype": self.precision.name,
            "family": self.loaded.family,
            "bidirectional": str(self.loaded.bidirectional),
            "pooling": self.config.pooling or self.loaded.default_pooling,
            "normalize": str(self.config.normalize),
            "max_length": str(self.max_length),
        }

    # -- the seam -----------------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        with self._tokenizer_lock:
            self._tokenizer.no_truncation()
            try:
                encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
            finally:
                self._tokenizer.enable_truncation(self.max_length)
        return [len(encoding.ids) for encoding in encodings]

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        output = np.empty((len(texts), self.facts.dimension), dtype=np.float32)
        if not texts:
            return output
        token_ids = self.tokenize(list(texts))
        batches = plan_batches([len(ids) for ids in token_ids], self.config.batch_tokens)
        with tqdm(total=len(texts), unit="text", desc="Embedding", disable=not show_progress) as progress:
            for batch in batches:
                output[batch] = self._run([token_ids[p] for p in batch])
                progress.update(len(batch))
        return output

    # -- below the seam -----------------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (special tokens included), truncated to ``max_length`` with a warning."""
        with self._tokenizer_lock:
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        truncated = sum(1 for encoding in encodings if encoding.overflowing)
        warn_truncated(truncated, len(texts), self.max_length, self.loaded.position_limit)
        ids = [encoding.ids for encoding in encodings]
        self._report_unknown(texts, ids, [encoding.special_tokens_mask for encoding in encodings])
        return ids

    def _report_unknown(self, texts: list[str], ids: list[list[int]], special: list[list[int]]) -> None:
        """Warn about texts that are mostly unknown tokens (a word over the tokenizer's word limit).

        Mostly unknown by count (at least :data:`MOSTLY_UNKNOWN` of the tokens between the special
        ones) or by what they stand for: one unknown token can stand for a whole 150-character word,
        and after an instruction prefix that one token is a small share of the count while the
        vector, the prefix's alone, is the same for every such text. The texts are named by their
        beginning, not their position: what reaches the backend is the encoder's distinct texts (or
        a collection's texts not yet stored), whose positions are not the caller's.
        """
        if self._unknown_id is None:
            return
        mostly, by_characters = [], []
        for position, (row, mask) in enumerate(zip(ids, special, strict=True)):
            real = len(row) - sum(mask)
            unknown = sum(1 for token in row if token == self._unknown_id)
            if real and unknown / real >= MOSTLY_UNKNOWN:
                mostly.append(position)
            elif unknown:
                by_characters.append(position)
        if by_characters:
            mostly = sorted(mostly + self._mostly_unknown_characters(texts, by_characters))
        if mostly:
            first = texts[mostly[0]]
            logger.warning(
                "%d of %d texts are mostly unknown tokens to %s's tokenizer (the first begins %r): their "
                "vectors say little about them. Typical causes: words longer than the tokenizer's word "
                "limit, or a script the vocabulary does not cover.",
                len(mostly),
                len(ids),
                self.config.model,
                first if len(first) <= EXCERPT else first[:EXCERPT] + "...",
            )

    def _mostly_unknown_characters(self, texts: list[str], positions: list[int]) -> list[int]:
        """Those of ``positions`` whose unknown tokens stand for at least :data:`MOSTLY_UNKNOWN` of
        their text's non-space characters (encoded again for the offsets: only texts with an unknown
        token, rare in a corpus the vocabulary covers)."""
        with self._tokenizer_lock:
            encodings = self._tokenizer.encode_batch([texts[p] for p in positions], add_special_tokens=True)
        found = []
        for position, encoding in zip(positions, encodings, strict=True):
            text = texts[position]
            lost = sum(
                len("".join(text[start:end].split()))  # an unknown token's characters, spaces aside
                for token, (start, end) in zip(encoding.ids, encoding.offsets, strict=True)
                if token == self._unknown_id
            )
            if lost and lost / len("".join(text.split())) >= MOSTLY_UNKNOWN:
                found.append(position)
        return found

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        return run_halving(batch, self._forward, self.device, what="text")

    def _inputs(self, batch: list[list[int]]) -> dict[str, Any]:
        """Padded ids, mask and (decoders) positions counted from each text's first real token."""
        loaded = self.loaded
        inputs = padded_inputs(
            batch,
            pad_token_id=loaded.pad_token_id,
            padding_side=loaded.padding_side,
            device=loaded.device,
            positions=loaded.needs_position_ids,
        )
        if loaded.bidirectional:
            inputs["is_causal"] = False
        return inputs

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        inputs = self._inputs(batch)
        with self._inference_lock, torch.inference_mode(), self.precision.context():
            hidden = self.loaded.module(**inputs).last_hidden_state
            vectors = pool(hidden, inputs["attention_mask"], self.facts.pooling)  # type: ignore[arg-type]
            if self.config.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return (
            f"LocalBackend(model={self.config.model!r}, family={self.facts.family!r}, "
            f"device={self.device}, dtype={self.precision.describe()!r})"
        )


def padded_inputs(
    batch: list[list[int]],
    *,
    pad_token_id: int,
    padding_side: str,
    device: torch.device,
    positions: bool,
    segments: list[list[int]] | None = None,
) -> dict[str, Any]:
    """The model inputs of one batch of token ids: padded on ``padding_side``, with the mask, the
    segment ids when given, and (``positions``, decoders) positions counted from each row's first
    real token, so that left padding never shifts a text's rotary positions: its result is then the
    same alone or in any batch. The one padding of the local runtimes (encoder and rerankers)."""
    width = max(len(ids) for ids in batch)
    input_ids = np.full((len(batch), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    types = np.zeros((len(batch), width), dtype=np.int64)
    for row, ids in enumerate(batch):
        span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
        input_ids[row, span] = ids
        mask[row, span] = 1
        if segments is not None:
            types[row, span] = segments[row]
    inputs: dict[str, Any] = {
        "input_ids": torch.from_numpy(input_ids).to(device),
        "attention_mask": torch.from_numpy(mask).to(device),
    }
    if segments is not None:
        inputs["token_type_ids"] = torch.from_numpy(types).to(device)
    if positions:
        inputs["position_ids"] = (inputs["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        inputs["use_cache"] = False
    return inputs


def run_halving(
    batch: list[Any],
    forward: Callable[[list[Any]], np.ndarray],
    device: torch.device,
    what: str,
    tokens: Callable[[Any], int] = len,
) -> np.ndarray:
    """``forward(batch)``, split in halves and retried while the device runs out of memory.

    The one out-of-memory rule of the local runtimes (encoder and rerankers); ``what`` names one row
    of the batch (a text, a pair) in the messages and ``tokens`` tells a row's length.
    """
    try:
        return forward(batch)
    except torch.OutOfMemoryError:
        width = max(tokens(row) for row in batch)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if len(batch) == 1:
            raise EncoderOutOfMemoryError(
                f"a single {what} of {width} tokens does not fit in {device} memory; lower max_length or "
                "use a device with more memory"
            ) from None
        logger.warning(
            "Out of memory on a batch of %d %ss x %d tokens; splitting it in two and retrying. Lower "
            "batch_tokens to avoid the retry.",
            len(batch),
            what,
            width,
        )
        half = len(batch) // 2
        return np.concatenate(
            [
                run_halving(batch[:half], forward, device, what, tokens),
                run_halving(batch[half:], forward, device, what, tokens),
            ]
        )


def _unknown_token_id(tokenizer: Tokenizer) -> int | None:
    """The id of the unknown token of a WordPiece/BPE/Unigram vocabulary, if it has one."""
    name = getattr(tokenizer.model, "unk_token", None)
    return tokenizer.token_to_id(name) if isinstance(name, str) else None
