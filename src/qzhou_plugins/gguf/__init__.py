"""GGUF export: a checkpoint -> a file that llama.cpp runtimes (llama-server, Ollama, LM Studio,
llama-cpp-python, our llama.cpp backend) embed with correctly, bidirectional attention included.

    source.py      the checkpoint: its facts (shared with the torch loader), llama.cpp architecture
    vocabulary.py  the tokenizer in llama.cpp's terms
    tensors.py     source tensors -> GGUF names and types
    export.py      export_gguf: metadata, tokenizer, tensors streamed one at a time
    quantize.py    k-quants through llama.cpp's quantizer (the ``llama`` extra)

It needs the ``gguf`` package (part of the ``all`` install); the names below are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ..backends.llama_cpp.keys import EXPORT_TYPES

if TYPE_CHECKING:
    from .export import export_gguf
    from .source import GGUFExportError

__getattr__, __dir__ = lazy_names(__name__, {".export": ("export_gguf",), ".source": ("GGUFExportError",)})

__all__ = ["EXPORT_TYPES", "GGUFExportError", "export_gguf"]
