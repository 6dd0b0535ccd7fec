"""The id a chunk is stored under: a hash of its text and metadata."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def content_id(text: str, metadata: Mapping[str, Any] | None) -> str:
    """The default id: a hash of the text and its metadata, so that re-adding the same record is a no-op.

    The metadata takes part so that one text from two sources stays two records.
    """
    canonical = json.dumps([text, dict(metadata or {})], sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]
