"""k-quants (q4_k_m) by llama.cpp's own quantizer, from a lossless GGUF the exporter wrote first.

Pure Python has no k-quant encoder worth trusting, and the quantizer that llama.cpp runtimes are
tested with is llama.cpp's: this reaches it through llama-cpp-python (the ``llama`` extra). It
copies every metadata key, ours included, and sets ``general.file_type`` to the new type.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from ..backends.base import ModelLoadError
from ..backends.llama_cpp.keys import GGUF_FILE_TYPES
from ..backends.llama_cpp.library import LLAMA_EXTRA, llama_cpp
from .source import GGUFExportError


def require_llama_cpp(what: str) -> Any:
    """The ``llama_cpp`` module (its log routed to ours), or an error that names the extra and what
    works without it."""
    try:
        return llama_cpp()
    except ModelLoadError as error:
        raise GGUFExportError(
            f"{what} is made by llama.cpp's own quantizer, which comes with llama-cpp-python: "
            f"{LLAMA_EXTRA} (compiled from source; the README gives the Metal and CUDA flags). "
            "f16, bf16 and q8_0 need only the gguf package."
        ) from error


def quantize_file(source: Path, out: Path, gguf_type: str, threads: int | None = None) -> None:
    """Quantize the GGUF ``source`` into ``out`` as ``gguf_type`` with llama.cpp."""
    library = require_llama_cpp(f"--type {gguf_type}")
    params = library.llama_model_quantize_default_params()
    params.ftype = GGUF_FILE_TYPES[gguf_type]
    params.nthread = threads or (os.cpu_count() or 1)
    status = library.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0:
        raise GGUFExportError(f"llama.cpp could not quantize {source} to {gguf_type} (status {status})")
