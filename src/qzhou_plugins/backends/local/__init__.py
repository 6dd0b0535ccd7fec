"""A model loaded in this process: loading, the shared weights, batching, pooling and the runner.

Its names are imported on first use (torch and transformers take seconds to import): a process that
only talks to a served model, or only asks which models are loaded, never pays for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_names
from ...config import DEMO_MODEL
from ..base import EncoderOutOfMemoryError, ModelLoadError
from .registry import loaded_models, release_weights

if TYPE_CHECKING:
    from .loading import LoadedModel
    from .runner import LocalBackend

__getattr__, __dir__ = lazy_names(__name__, {".loading": ("LoadedModel",), ".runner": ("LocalBackend",)})

__all__ = [
    "DEMO_MODEL",
    "EncoderOutOfMemoryError",
    "LoadedModel",
    "LocalBackend",
    "ModelLoadError",
    "loaded_models",
    "release_weights",
]
