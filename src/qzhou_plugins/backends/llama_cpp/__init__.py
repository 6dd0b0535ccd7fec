"""A GGUF model in this process, computed by llama.cpp (llama-cpp-python, the ``llama`` extra).

    keys.py     what a GGUF says beyond llama.cpp's keys, and which types are interchangeable
    library.py  llama-cpp-python loaded once, its logs, one copy of each model per process
    context.py  a context made for embedding: non-causal where the file says so, mean pooling,
                n_ubatch == n_batch; batches of several sequences per llama_decode
    runner.py   LlamaCppBackend: tokens as the Hugging Face tokenizer makes them, truncation with
                the usual warning, batching by tokens, the facts and fingerprint of the file

Nothing here imports llama-cpp-python until a backend is made, so the exporter (which only reads
:mod:`.keys`) and ``import qzhou_plugins`` never need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_names

if TYPE_CHECKING:
    from .runner import LlamaCppBackend

__getattr__, __dir__ = lazy_names(__name__, {".runner": ("LlamaCppBackend",)})

__all__ = ["LlamaCppBackend"]
