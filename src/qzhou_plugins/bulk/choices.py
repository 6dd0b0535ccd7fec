"""The values a bulk job can be asked for: a module of names only, so that the ``embed`` command's
flags (and ``qzhou-plugins --help``) are built without importing numpy, pyarrow or the job."""

from __future__ import annotations

SIDES = ("document", "query")
"""Which side's prefix the corpus is embedded with."""
STORAGE_DTYPES = ("float32", "float16")
"""What ``embed`` writes: the vectors as computed, or rounded to half precision."""
EXPORT_PRECISIONS = ("int8", "binary")
"""The compact codes ``export_quantized`` writes from a finished output."""
DEFAULT_SHARD_ROWS = 4096
"""Rows per shard: a killed run loses at most this much work; 1M rows make about 250 files."""
