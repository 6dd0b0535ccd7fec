"""The ``gguf`` package (llama.cpp's own Python writer), or an error that names the extra."""

from __future__ import annotations

try:
    import gguf
except ImportError as error:  # pragma: no cover - the test venv has it
    raise ImportError(
        "GGUF export writes with the gguf package: pip install 'qzhou-plugins[gguf]' (part of "
        "qzhou-plugins[all])"
    ) from error

__all__ = ["gguf"]
