"""An OpenAI-compatible embeddings and rerank server for one model (and, with ``--rerank-model``, a
cross-encoder or LLM reranker beside it), with cross-request batching.

``qzhou-plugins serve`` (or ``python -m qzhou_plugins.server``) loads the model once; every process
of a RAG stack then uses it over HTTP, with QZhou's instructions applied by the server on the side
the request names. See docs/serving.md.

Only :mod:`.options` and :mod:`.settings` load eagerly (the CLI's parser needs them, with or without
the ``serve`` extra); :func:`create_app` and :func:`run_server` import FastAPI and uvicorn when
first used, with an ImportError that names the extra if they are missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .options import add_server_arguments, serve_from_arguments
from .settings import ServerSettings

if TYPE_CHECKING:
    from .app import create_app, run_server

__all__ = ["ServerSettings", "add_server_arguments", "create_app", "run_server", "serve_from_arguments"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "run_server"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
