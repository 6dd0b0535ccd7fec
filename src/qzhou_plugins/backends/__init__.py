"""Runtimes behind the core's seams: :class:`Backend` (texts to vectors) and :class:`RerankBackend`
(pairs to scores) are the contracts, ``local`` the torch ones, ``llama_cpp`` a GGUF file on
llama.cpp, ``remote`` and ``remote_rerank`` a served model over HTTP."""

from __future__ import annotations

from ..config import EncoderConfig, RerankerConfig
from .base import Backend, BackendFacts, RerankBackend, RerankerFacts


def backend_for(config: EncoderConfig) -> Backend:
    """The backend that ``config`` asks for: a served model when it has a ``base_url``, llama.cpp for
    a ``.gguf`` file, else torch; its vectors cut to ``config.dimensions`` when asked (Matryoshka)."""
    from .matryoshka import with_dimensions

    return with_dimensions(_runtime_for(config), config.dimensions)


def _runtime_for(config: EncoderConfig) -> Backend:
    if config.base_url is not None:
        from .remote import RemoteBackend

        return RemoteBackend(config)
    if config.model.lower().endswith(".gguf"):
        from .llama_cpp import LlamaCppBackend

        return LlamaCppBackend(config)
    from .local import LocalBackend

    return LocalBackend(config)


def rerank_backend_for(config: RerankerConfig, kind: str) -> RerankBackend:
    """The pair-scoring runtime of a cross-encoder or LLM reranker: served, a ``.gguf`` file on
    llama.cpp, or a checkpoint loaded here."""
    if config.base_url is not None:
        from .remote_rerank import RemoteReranker

        return RemoteReranker(config)
    if config.model.lower().endswith(".gguf"):
        from .llama_cpp.reranking import LlamaCppReranker

        return LlamaCppReranker(config, kind)
    from .local.reranking import LocalReranker

    return LocalReranker(config, kind)


__all__ = ["Backend", "BackendFacts", "RerankBackend", "RerankerFacts", "backend_for", "rerank_backend_for"]
