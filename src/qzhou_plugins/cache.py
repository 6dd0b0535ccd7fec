"""An on-disk embedding cache at the seam: re-embedding unchanged texts with a 7B model costs nothing.

Each vector is stored under a hash of the backend's fingerprint (weights, dtype, pooling,
normalisation, max_length) and the exact prefixed text, so a changed instruction, model or option is
a different key and can never return a stale vector. The store is ``diskcache`` (SQLite plus files,
safe across threads and processes), installed with the ``cache`` extra.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


class EmbeddingCache:
    """Vectors of prefixed texts for one backend fingerprint, kept in ``directory``."""

    def __init__(self, directory: str, fingerprint: Mapping[str, str], dimension: int) -> None:
        try:
            import diskcache  # type: ignore[import-untyped]
        except ImportError as error:
            raise ImportError("cache_dir needs diskcache: pip install 'qzhou-plugins[cache]'") from error
        self.directory = directory
        self.dimension = dimension
        self._namespace = json.dumps(dict(fingerprint), sort_keys=True).encode()
        self._store: Any = diskcache.Cache(directory)
        self.hits = 0
        self.misses = 0

    def _key(self, text: str) -> str:
        return hashlib.sha256(self._namespace + b"\x00" + text.encode("utf-8")).hexdigest()

    def embed(self, texts: Sequence[str], compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Rows for ``texts``: stored ones from disk, the others from ``compute`` (then stored)."""
        output = np.empty((len(texts), self.dimension), dtype=np.float32)
        keys = [self._key(text) for text in texts]
        missing: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            stored = self._store.get(key)
            if stored is not None and len(stored) == 4 * self.dimension:
                output[position] = np.frombuffer(stored, dtype=np.float32)
            else:
                missing.setdefault(key, []).append(position)
        self.hits += len(texts) - sum(len(p) for p in missing.values())
        self.misses += len(missing)
        if missing:
            firsts = [places[0] for places in missing.values()]
            rows = compute([texts[p] for p in firsts])
            with self._store.transact():
                for (key, places), row in zip(missing.items(), rows, strict=True):
                    self._store.set(key, np.ascontiguousarray(row, dtype=np.float32).tobytes())
                    output[places] = row
        return output

    def close(self) -> None:
        self._store.close()
