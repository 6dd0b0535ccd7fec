"""QZhou-Embedding for RAG stacks: one shared inference core and thin framework adapters.

``import qzhou_plugins`` is instant: every public name below is imported on first use, so a process
that only talks to a served model never imports torch, and ``qzhou-plugins --help`` answers at once.
The framework adapters live in ``qzhou_plugins.langchain``, ``qzhou_plugins.llama_index`` and
``qzhou_plugins.chroma``; they import their framework when they are imported, so ``import
qzhou_plugins`` works with no framework installed. Type checkers and IDEs read the names from the
``TYPE_CHECKING`` block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .backends.base import Backend, BackendFacts, EncoderOutOfMemoryError, ModelLoadError, RerankerFacts
    from .backends.local.registry import loaded_models
    from .config import DEFAULT_MODEL, DEMO_MODEL, EncoderConfig, LlmTemplate, RerankerConfig
    from .encoder import Encoder, release_all
    from .instructions import (
        QZHOU_INSTRUCTION_FORMAT,
        Task,
        TaskType,
        UnknownTaskError,
        published_tasks,
        resolve_task,
    )
    from .rerank.reranker import Reranker
    from .validation import validate_texts

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        ".backends.base": (
            "Backend",
            "BackendFacts",
            "EncoderOutOfMemoryError",
            "ModelLoadError",
            "RerankerFacts",
        ),
        ".backends.local.registry": ("loaded_models",),
        ".config": ("DEFAULT_MODEL", "DEMO_MODEL", "EncoderConfig", "LlmTemplate", "RerankerConfig"),
        ".rerank.reranker": ("Reranker",),
        ".encoder": ("Encoder", "release_all"),
        ".instructions": (
            "QZHOU_INSTRUCTION_FORMAT",
            "Task",
            "TaskType",
            "UnknownTaskError",
            "published_tasks",
            "resolve_task",
        ),
        ".validation": ("validate_texts",),
    },
)

__all__ = [
    "DEFAULT_MODEL",
    "DEMO_MODEL",
    "QZHOU_INSTRUCTION_FORMAT",
    "Backend",
    "BackendFacts",
    "Encoder",
    "EncoderConfig",
    "EncoderOutOfMemoryError",
    "LlmTemplate",
    "ModelLoadError",
    "Reranker",
    "RerankerConfig",
    "RerankerFacts",
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
