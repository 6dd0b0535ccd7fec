"""The llama.cpp backend: a GGUF file in this process, behind the same seam as the torch one.

tokenise with llama.cpp into the Hugging Face tokenizer's ids (:mod:`.tokens`) ->
truncate to ``max_length`` keeping the model's own special tokens, with the usual warning -> pack
texts into decodes of at most the token budget -> llama.cpp pools (the file's pooling: mean, CLS or
last token) -> normalise.

llama-cpp-python's own ``Llama.embed`` is not used: it truncates at ``n_batch`` rather than at the
model's length, silently, and parses no special tokens (``<|im_start|>`` in a text would become
other tokens than the Hugging Face tokenizer gives).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ...config import EncoderConfig
from ..base import BackendFacts, ModelLoadError, chosen_max_length, unit_rows, warn_truncated
from .context import EmbeddingContext
from .keys import vector_family
from .library import GGUFModel, llama_cpp, load_model
from .metadata import FileFacts, describe, is_reranker, with_family
from .tokens import Tokenizer

DEFAULT_BATCH_TOKENS = 1024
"""Tokens per decode unless ``batch_tokens`` is set: llama.cpp attends over the whole decode (masked
per text), so a huge one mostly computes masked-out attention on short texts."""


class LlamaCppBackend:
    """Embeds prefixed texts with a GGUF model through llama.cpp (see the module docstring)."""

    def __init__(self, config: EncoderConfig) -> None:
        _refuse_torch_options(config)
        path = Path(config.model).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {config.model!r} does not exist")
        self.config = config
        self.model: GGUFModel = load_model(path, _gpu_layers(config.device))
        if is_reranker(self.model.metadata):
            raise ModelLoadError(
                f"{config.model!r} is a reranker's GGUF file (rank pooling): it scores pairs and embeds "
                "nothing; use it as Reranker(model=...) or --rerank-model"
            )
        described = describe(str(path), self.model.metadata, self.model.context_length)
        self.file: FileFacts = with_family(str(path), described, self.model.metadata, config.family)
        self.max_length: int = chosen_max_length(
            config.max_length, config.model, self.model.context_length, self.file.max_length
        )
        self.tokenizer = Tokenizer(self.model)
        if self.max_length <= self.tokenizer.special_count:
            raise ValueError(f"max_length={self.max_length} leaves no room for text in {config.model!r}")
        bidirectional = config.bidirectional if config.bidirectional is not None else self.file.bidirectional
        self._causal = not bidirectional
        self._context_lock = threading.Lock()
        budget = config.batch_tokens if "batch_tokens" in config.model_fields_set else DEFAULT_BATCH_TOKENS
        self.context = self._make_context(budget)  # checks attention and pooling now
        self._facts = self._make_facts(path, bidirectional)

    def _make_context(self, budget: int) -> EmbeddingContext:
        return EmbeddingContext(
            self.model,
            budget=budget,
            threads=self.config.threads or os.cpu_count() or 1,
            pooling=self.config.pooling or self.file.pooling,
            causal=self._causal,
        )

    def _context_for(self, longest: int) -> EmbeddingContext:
        """A context whose decodes hold a text of ``longest`` tokens: a text is never split across
        decodes (its tokens attend to each other), so a longer text than the budget grows the context
        (its memory grows with the square of the budget: it is not made larger until needed)."""
        with self._context_lock:
            if longest > self.context.budget:
                self.context = self._make_context(min(max(longest, 2 * self.context.budget), self.max_length))
            return self.context

    def _make_facts(self, path: Path, bidirectional: bool) -> BackendFacts:
        stat = path.stat()
        weights = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        pooling = self.config.pooling or self.file.pooling
        return BackendFacts(
            model=self.config.model,
            dimension=self.model.dimension,
            max_length=self.max_length,
            position_limit=self.model.context_length,
            prompt_style=self.file.prompt_style,
            family=self.file.family,
            pooling=pooling,
            normalized=self.config.normalize,
            fingerprint={
                "backend": "llama.cpp",
                "model": self.config.model,
                "weights": weights[:16],
                "dtype": self.file.gguf_type,  # the weights type, under the key the local backend uses
                "source_model": self.file.source_model or "",
                "family": self.file.family,
                "bidirectional": str(bidirectional),
                "pooling": pooling,
                "normalize": str(self.config.normalize),
                "max_length": str(self.max_length),
            },
            source_model=self.file.source_model,
            vector_family=vector_family(self.file.gguf_type),
            runtime=f"llama.cpp, {self.file.gguf_type}",
        )

    @property
    def facts(self) -> BackendFacts:
        return self._facts

    @property
    def gguf_type(self) -> str:
        """The file's weights type (``f16``, ``q8_0``...): it decides how close the vectors are to torch's."""
        return self.file.gguf_type

    # -- the seam -----------------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self.tokenizer.tokens(text)) + self.tokenizer.special_count for text in texts]

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        output = np.empty((len(texts), self.facts.dimension), dtype=np.float32)
        if not texts:
            return output
        sequences = self.tokenize(list(texts))
        lengths = [len(sequence) for sequence in sequences]
        context = self._context_for(max(lengths))
        batches = pack_by_tokens(lengths, context.budget, context.max_sequences)
        with tqdm(total=len(texts), unit="text", desc="Embedding", disable=not show_progress) as progress:
            for batch in batches:
                output[batch] = context.embed([sequences[p] for p in batch])
                progress.update(len(batch))
        return unit_rows(output).astype(np.float32, copy=False) if self.config.normalize else output

    # -- below the seam -----------------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text with the model's special tokens, cut to ``max_length`` with a warning."""
        encoded = [self.tokenizer.encode(text, self.max_length) for text in texts]
        truncated = sum(cut for _, cut in encoded)
        warn_truncated(truncated, len(texts), self.max_length, self.model.context_length)
        return [ids for ids, _ in encoded]

    def __repr__(self) -> str:
        family, kind = self.facts.family, self.gguf_type
        return f"LlamaCppBackend(model={self.config.model!r}, family={family!r}, type={kind!r})"


def pack_by_tokens(lengths: Sequence[int], budget: int, max_sequences: int) -> list[list[int]]:
    """Text positions grouped into decodes of at most ``budget`` tokens and ``max_sequences`` texts.

    llama.cpp packs texts without padding, so a decode costs the sum of its lengths: longest first
    (a decode too large for memory fails at once), each decode filled up to the budget.
    """
    order = sorted(range(len(lengths)), key=lambda position: -lengths[position])
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for position in order:
        if current and (used + lengths[position] > budget or len(current) >= max_sequences):
            batches.append(current)
            current, used = [], 0
        current.append(position)
        used += lengths[position]
    if current:
        batches.append(current)
    return batches


def _refuse_torch_options(config: EncoderConfig) -> None:
    """A GGUF file decides its own weights type and attention kernel: asking for others is an error
    (their defaults pass: a Chroma collection replays ``dtype="auto"``)."""
    given = [f"dtype={config.dtype!r}"] if config.dtype != "auto" else []
    default_kernel = EncoderConfig.model_fields["attn_implementation"].default
    if config.attn_implementation != default_kernel:
        given.append(f"attn_implementation={config.attn_implementation!r}")
    if given:
        raise ValueError(
            f"{', '.join(given)} apply to torch checkpoints; {config.model!r} is a GGUF file, whose type "
            "is chosen when it is exported (qzhou-plugins export gguf --type): leave them out"
        )


def _gpu_layers(device: str | None) -> int:
    """All layers on the GPU when llama.cpp was built with one and the device allows, none on CPU."""
    supported = bool(llama_cpp().llama_supports_gpu_offload())
    if device in (None, "cpu") or device.startswith("cpu:"):
        return -1 if device is None and supported else 0
    if not supported:
        raise ModelLoadError(
            f"device {device!r} asks for a GPU, but this llama-cpp-python was built for CPU only: rebuild "
            'it with CMAKE_ARGS="-DGGML_CUDA=on" (or -DGGML_METAL=on) as the README shows'
        )
    return -1
