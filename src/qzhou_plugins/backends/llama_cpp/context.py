"""A llama.cpp context made for embedding, and one ``llama_decode`` of several texts at a time.

The settings that decide correct vectors are set here explicitly, never left to defaults:

- attention: non-causal for a bidirectional model (QZhou), causal otherwise, and *verified* on the
  context: llama.cpp reports ``causal_attn`` when it makes one, and a context that does not run the
  attention asked for is refused (a Qwen2 context is causal unless told otherwise, and causal
  vectors of QZhou are silently wrong);
- pooling: the model's (mean for QZhou and MiniLM), checked with ``llama_pooling_type``;
- ``n_ubatch == n_batch == n_ctx``: llama.cpp splits a batch larger than ``n_ubatch`` into
  micro-batches, which for non-causal attention aborts the whole process; one decode here never
  holds more tokens than one micro-batch;
- one unified KV buffer (``kv_unified``), so that any mix of lengths fits the budget, cleared
  before every decode: texts never see each other's tokens.
"""

from __future__ import annotations

import re
import threading

import numpy as np

from ..base import ModelLoadError
from .library import GGUFModel, captured_log, llama_cpp

POOLING_TYPES = {"mean": 1, "cls": 2, "last": 3, "rank": 4}
"""Our pooling names -> ``enum llama_pooling_type`` (llama.cpp has no max pooling; rank is a
reranker's head: its outputs, not a vector)."""
_REPORTED_CAUSAL = re.compile(r"causal_attn\s*=\s*(\d)")


class EmbeddingContext:
    """A context of ``model`` for batches of up to ``budget`` tokens (see the module docstring)."""

    def __init__(
        self, model: GGUFModel, *, budget: int, threads: int, pooling: str, causal: bool, width: int = 0
    ) -> None:
        if pooling not in POOLING_TYPES:
            raise ValueError(f"llama.cpp pools by {', '.join(POOLING_TYPES)}, not {pooling!r}")
        library = llama_cpp()
        self._library = library
        self.model = model
        self.budget = budget
        self.width = width or model.dimension
        """Floats per sequence: the vector, or a reranker's outputs (``llama_model_n_cls_out``)."""
        self.max_sequences = min(budget, int(library.llama_max_parallel_sequences()))
        params = library.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = budget
        params.n_seq_max = self.max_sequences
        params.kv_unified = True
        params.embeddings = True
        params.n_threads = params.n_threads_batch = threads
        params.pooling_type = POOLING_TYPES[pooling]
        params.attention_type = (
            library.LLAMA_ATTENTION_TYPE_CAUSAL if causal else library.LLAMA_ATTENTION_TYPE_NON_CAUSAL
        )
        with captured_log() as lines:
            pointer = library.llama_init_from_model(model.pointer, params)
        if not pointer:
            raise ModelLoadError(f"llama.cpp cannot make a context for {model.path} ({budget} tokens)")
        self.pointer = pointer
        self._batch = library.llama_batch_init(budget, 0, 1)
        self.lock = threading.Lock()
        self._check(lines, causal, pooling)

    def _check(self, lines: list[str], causal: bool, pooling: str) -> None:
        """Refuse a context whose attention or pooling is not the one asked for."""
        reported = [match.group(1) for line in lines if (match := _REPORTED_CAUSAL.search(line))]
        if not reported:
            raise ModelLoadError(
                "llama.cpp did not report the attention of its context (no 'causal_attn' in its log), so "
                "bidirectional attention cannot be confirmed; this llama-cpp-python is not one this "
                "package was tested with (qzhou-plugins[llama] pins the tested range)"
            )
        self.reported_causal = reported[-1] == "1"  # the attention llama.cpp says it runs
        if self.reported_causal != causal:
            want = "causal" if causal else "non-causal (bidirectional)"
            raise ModelLoadError(
                f"llama.cpp made a context for {self.model.path} without the {want} attention asked for"
            )
        actual = int(self._library.llama_pooling_type(self.pointer))
        if actual != POOLING_TYPES[pooling]:
            raise ModelLoadError(f"llama.cpp pools {self.model.path} with type {actual}, not {pooling}")

    def embed(self, sequences: list[list[int]]) -> np.ndarray:
        """One pooled float32 row per token sequence (:attr:`width` floats), all in one decode."""
        total = sum(len(tokens) for tokens in sequences)
        if total > self.budget or len(sequences) > self.max_sequences:
            raise ValueError(
                f"{len(sequences)} texts of {total} tokens exceed one decode ({self.budget} tokens)"
            )
        library, batch = self._library, self._batch
        with self.lock:
            at = 0
            for sequence, tokens in enumerate(sequences):
                for position, token in enumerate(tokens):
                    batch.token[at] = token
                    batch.pos[at] = position
                    batch.n_seq_id[at] = 1
                    batch.seq_id[at][0] = sequence
                    batch.logits[at] = 1  # every token is an output of an embedding context
                    at += 1
            batch.n_tokens = at
            memory = library.llama_get_memory(self.pointer)
            if memory:
                library.llama_memory_clear(memory, True)
            status = int(library.llama_decode(self.pointer, batch))
            if status != 0:
                raise RuntimeError(
                    f"llama.cpp could not run a batch of {len(sequences)} texts (status {status})"
                )
            rows = np.empty((len(sequences), self.width), dtype=np.float32)
            for sequence in range(len(sequences)):
                pointer = library.llama_get_embeddings_seq(self.pointer, sequence)
                rows[sequence] = np.ctypeslib.as_array(pointer, shape=(self.width,))
        return rows

    def __del__(self) -> None:
        pointer, self.pointer = getattr(self, "pointer", None), None
        if pointer:
            self._library.llama_batch_free(self._batch)
            self._library.llama_free(pointer)
