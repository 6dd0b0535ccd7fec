"""Runtimes behind the encoder's seam: :class:`Backend` is the contract, ``local`` the torch one."""

from __future__ import annotations

from ..config import EncoderConfig
from .base import Backend, BackendFacts


def backend_for(config: EncoderConfig) -> Backend:
    """The backend that ``config`` asks for: today, the model loaded in this process."""
    from .local import LocalBackend

    return LocalBackend(config)


__all__ = ["Backend", "BackendFacts", "backend_for"]
