"""Matryoshka vectors: the leading ``dimensions`` of every row, renormalised, for any backend.

Done once, at the seam, so a model run here, on llama.cpp or on a server gives the same short vectors
and says the same facts (``dimension``, a fingerprint that records the size). Normalising is scale
free, so cutting a normalised row and renormalising equals normalising the cut row: the backend
below may normalise first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..families import UnknownFamilyError, family_named
from .base import Backend, BackendFacts, unit_rows

__all__ = ["MatryoshkaBackend", "cut_rows", "with_dimensions"]


class MatryoshkaBackend:
    """``inner``'s vectors cut to ``dimensions`` (refused unless its family was trained for it)."""

    def __init__(self, inner: Backend, dimensions: int) -> None:
        facts = inner.facts
        try:
            family = family_named(facts.family)
        except UnknownFamilyError:
            raise ValueError(
                f"dimensions={dimensions}: the family of {facts.model!r} is not known ({facts.family!r}), "
                "so whether its vectors may be cut is not either; pass family= (e.g. 'qwen3-embedding')"
            ) from None
        family.check_dimensions(dimensions, facts.dimension, facts.model)
        self.inner = inner
        self.dimensions = dimensions
        fingerprint = {**facts.fingerprint, "dimensions": str(dimensions)}
        self._facts: BackendFacts = replace(facts, dimension=dimensions, fingerprint=fingerprint)
        if hasattr(inner, "aembed"):
            self.aembed = self._aembed

    @property
    def facts(self) -> BackendFacts:
        return self._facts

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        return self.inner.count_tokens(texts)

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        return self._cut(self.inner.embed(texts, show_progress=show_progress))

    async def _aembed(self, texts: Sequence[str]) -> np.ndarray:
        return self._cut(await self.inner.aembed(texts))  # type: ignore[attr-defined]

    def _cut(self, rows: np.ndarray) -> np.ndarray:
        return cut_rows(rows, self.dimensions, self._facts.normalized)

    def __getattr__(self, name: str) -> Any:
        """What the runtime below offers besides the seam (its device, dtype, model) stays reachable."""
        return getattr(self.__dict__["inner"], name)

    def __repr__(self) -> str:
        return f"MatryoshkaBackend({self.inner!r}, dimensions={self.dimensions})"


def cut_rows(rows: np.ndarray, dimensions: int, normalized: bool) -> np.ndarray:
    """The leading ``dimensions`` of each row, renormalised when the rows are ``normalized``: the one
    cut of every Matryoshka vector (a backend's here, a served request's in the server)."""
    short = np.ascontiguousarray(rows[:, :dimensions])
    return unit_rows(short).astype(np.float32, copy=False) if normalized else short


def with_dimensions(backend: Backend, dimensions: int | None) -> Backend:
    """``backend`` as it is for the full width, else cut to ``dimensions`` (checked)."""
    if dimensions is None or dimensions == backend.facts.dimension:
        return backend
    return MatryoshkaBackend(backend, dimensions)
