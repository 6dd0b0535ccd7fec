"""Runtimes behind the encoder's seam: :class:`Backend` is the contract, ``local`` the torch one,
``llama_cpp`` a GGUF file on llama.cpp, ``remote`` a served model over an OpenAI-compatible API."""

from __future__ import annotations

from ..config import EncoderConfig
from .base import Backend, BackendFacts


def backend_for(config: EncoderConfig) -> Backend:
    """The backend that ``config`` asks for: a served model when it has a ``base_url``, llama.cpp for
    a ``.gguf`` file, else torch."""
    if config.base_url is not None:
        from .remote import RemoteBackend

        return RemoteBackend(config)
    if config.model.lower().endswith(".gguf"):
        from .llama_cpp import LlamaCppBackend

        return LlamaCppBackend(config)
    from .local import LocalBackend

    return LocalBackend(config)


__all__ = ["Backend", "BackendFacts", "backend_for"]
