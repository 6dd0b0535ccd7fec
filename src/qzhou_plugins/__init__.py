"""QZhou-Embedding for RAG stacks: one shared inference core and thin framework adapters.

The framework adapters live in ``qzhou_plugins.langchain``, ``qzhou_plugins.llama_index`` and
``qzhou_plugins.chroma``; they are imported only when used, so ``import qzhou_plugins`` works with no
framework installed.
"""

from .backends import Backend, BackendFacts
from .backends.local import DEMO_MODEL, EncoderOutOfMemoryError, ModelLoadError, loaded_models
from .config import DEFAULT_MODEL, EncoderConfig
from .encoder import Encoder, release_all
from .instructions import (
    QZHOU_INSTRUCTION_FORMAT,
    Task,
    TaskType,
    UnknownTaskError,
    published_tasks,
    resolve_task,
)
from .validation import validate_texts

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "DEMO_MODEL",
    "QZHOU_INSTRUCTION_FORMAT",
    "Backend",
    "BackendFacts",
    "Encoder",
    "EncoderConfig",
    "EncoderOutOfMemoryError",
    "ModelLoadError",
    "Task",
    "TaskType",
    "UnknownTaskError",
    "__version__",
    "loaded_models",
    "published_tasks",
    "release_all",
    "resolve_task",
    "validate_texts",
]
