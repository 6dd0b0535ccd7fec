"""Sets of row ids kept as 64-bit hashes, so that bookkeeping a huge corpus costs 8 bytes per id.

A bulk job must know which ids exist (to refuse duplicates before any model work) and which are
already embedded (to skip them on a rerun). As Python strings in a set, a billion-row corpus would
need tens of gigabytes for this alone; as a sorted ``uint64`` array it needs 8 GB, and a 10M-row one
80 MB. Hashes can collide, so every place that relies on them checks for a collision among the ids
it knows and says so (at 1M ids the chance is about 3 in 100 million).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def hash_ids(ids: Sequence[str]) -> np.ndarray:
    """The 64-bit hash of each id (blake2b: the same on every machine and Python process)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


class IdHashes:
    """A growing collection of id hashes that becomes a sorted array for fast membership tests."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._sorted: np.ndarray | None = np.empty(0, dtype=np.uint64)

    def add(self, hashes: np.ndarray) -> None:
        if len(hashes):
            self._parts.append(np.asarray(hashes, dtype=np.uint64))
            self._sorted = None

    @property
    def sorted(self) -> np.ndarray:
        """Every hash added, sorted (repeats kept: see :meth:`repeated`)."""
        if self._sorted is None:
            self._sorted = np.sort(np.concatenate(self._parts)) if self._parts else np.empty(0, np.uint64)
            self._parts = [self._sorted]
        return self._sorted

    def __len__(self) -> int:
        return len(self.sorted)

    def repeated(self) -> np.ndarray:
        """The hashes added more than once (each listed once)."""
        values = self.sorted
        return np.unique(values[1:][values[1:] == values[:-1]])

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A boolean mask: which of ``hashes`` are in the collection."""
        return is_in(hashes, self.sorted)


def is_in(hashes: np.ndarray, sorted_hashes: np.ndarray) -> np.ndarray:
    """A boolean mask of ``hashes`` found in ``sorted_hashes`` (binary search: no set is built)."""
    if not len(sorted_hashes):
        return np.zeros(len(hashes), dtype=bool)
    places = np.searchsorted(sorted_hashes, hashes).clip(max=len(sorted_hashes) - 1)
    return np.asarray(sorted_hashes[places] == hashes)
