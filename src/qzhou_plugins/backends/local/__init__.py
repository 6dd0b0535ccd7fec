"""A model loaded in this process: loading, the shared weights, batching, pooling and the runner."""

from .loading import DEMO_MODEL, LoadedModel, ModelLoadError
from .registry import loaded_models, release_weights
from .runner import EncoderOutOfMemoryError, LocalBackend

__all__ = [
    "DEMO_MODEL",
    "EncoderOutOfMemoryError",
    "LoadedModel",
    "LocalBackend",
    "ModelLoadError",
    "loaded_models",
    "release_weights",
]
