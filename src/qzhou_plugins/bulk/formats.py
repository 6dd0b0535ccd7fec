"""Compact vectors at the storage edge: float16 output, and int8 or binary export with calibration.

Inside the package vectors are float32. Storage is where size matters: float16 halves it for a
loss far below retrieval noise; int8 quarters it and binary divides it by 32, for stores that score
such codes themselves. The int8 mapping is the one of sentence-transformers' ``quantize_embeddings``
(each dimension's calibration range cut into 256 steps), with two differences that matter on
real data: codes are rounded and clipped (a query outside the corpus's range saturates instead of
wrapping around to the other end), and the ranges are recorded with the codes, because queries
must be quantized with the very ranges of the corpus or their scores mean nothing. ``binary`` is
one bit per dimension (positive or not), packed eight to a byte (``ubinary`` in sentence-transformers).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .choices import EXPORT_PRECISIONS, STORAGE_DTYPES
from .load import iter_vectors, read_manifest
from .output import FINGERPRINT_KEY, MANIFEST_NAME, SHARD_PREFIX, OutputError

QUANTIZATION_KEY = b"qzhou:quantization"
FLOAT16_MAX = float(np.finfo(np.float16).max)


def storage_rows(vectors: np.ndarray, dtype: str) -> np.ndarray:
    """``vectors`` in the storage dtype; float16 refuses values it cannot hold rather than store inf."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(STORAGE_DTYPES)}, not {dtype!r}")
    if dtype == "float32":
        return np.asarray(vectors, dtype=np.float32)
    largest = float(np.abs(vectors).max(initial=0.0))
    if largest > FLOAT16_MAX:
        raise ValueError(
            f"a vector component is {largest:.3g}, beyond float16's range ({FLOAT16_MAX:.0f}): "
            "store float32, or keep normalize=True"
        )
    return np.asarray(vectors, dtype=np.float16)


def calibration_ranges(batches: Iterable[np.ndarray]) -> np.ndarray:
    """Each dimension's (minimum, maximum) over all ``batches``: a ``(2, dimension)`` float32 array."""
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    for batch in batches:
        rows = np.asarray(batch, dtype=np.float32)
        if not len(rows):
            continue
        low = rows.min(axis=0) if low is None else np.minimum(low, rows.min(axis=0))
        high = rows.max(axis=0) if high is None else np.maximum(high, rows.max(axis=0))
    if low is None or high is None:
        raise ValueError("no vectors to calibrate on")
    return np.stack([low, high]).astype(np.float32)


def quantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """int8 codes (with ``ranges`` from :func:`calibration_ranges`) or packed sign bits (``binary``)."""
    rows = np.asarray(vectors, dtype=np.float32)
    if precision == "binary":
        return np.packbits(rows > 0, axis=-1)
    if precision != "int8":
        raise ValueError(f"precision must be one of {', '.join(EXPORT_PRECISIONS)}, not {precision!r}")
    if ranges is None:
        raise ValueError("int8 needs the calibration ranges of the corpus (calibration_ranges)")
    starts, steps = _starts_and_steps(ranges)
    codes = np.rint((rows - starts) / steps) - 128
    return np.clip(codes, -128, 127).astype(np.int8)


def dequantize(
    codes: np.ndarray, precision: str, dimension: int, ranges: np.ndarray | None = None
) -> np.ndarray:
    """float32 approximations of the vectors behind ``codes`` (binary: +1 / -1 per dimension)."""
    if precision == "binary":
        bits = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=-1, count=dimension)
        return bits.astype(np.float32) * 2 - 1
    if ranges is None:
        raise ValueError("int8 needs the calibration ranges it was quantized with")
    starts, steps = _starts_and_steps(ranges)
    return (np.asarray(codes, dtype=np.float32) + 128) * steps + starts


def _starts_and_steps(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ranges = np.asarray(ranges, dtype=np.float32)
    steps = (ranges[1] - ranges[0]) / 255
    return ranges[0], np.where(steps > 0, steps, 1.0).astype(np.float32)


def export_quantized(
    output: str | Path, destination: str | Path, precision: str, *, batch_size: int = 4096
) -> dict[str, Any]:
    """Write ``precision`` codes of a finished output into ``destination`` (its own shards and manifest).

    int8 takes two passes over the vectors: the calibration ranges first (every row counts, so that
    no stored vector falls outside them), then the codes. The ranges are recorded in each shard's
    schema metadata and in the manifest, where a query encoder finds them. The export is written
    into a temporary folder renamed into place, so ``destination`` is complete or absent; an export
    of the same output already there is returned as it is.
    """
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(EXPORT_PRECISIONS)}, not {precision!r}")
    manifest = read_manifest(output)
    folder = Path(destination)
    previous = _previous_export(folder, manifest, precision)
    if previous is not None:
        return previous
    if folder.exists():
        raise OutputError(f"{folder} already exists and is not this export: choose a new folder")
    ranges = None
    if precision == "int8":
        ranges = calibration_ranges(batch.vectors for batch in iter_vectors(output, batch_size=batch_size))
    quantization = {
        "precision": precision,
        "dimension": int(manifest["fingerprint"]["dimension"]),
        "ranges": None if ranges is None else ranges.tolist(),
        "scheme": "int8: round((x - min) / ((max - min) / 255)) - 128, clipped; binary: packbits(x > 0)",
    }
    building = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        shards = _write_codes(output, building, manifest["fingerprint"], quantization, ranges, batch_size)
        exported = {
            **manifest,
            "shards": shards,
            "quantization": quantization,
            "exported_from": manifest["shards"],
        }
        text = json.dumps(exported, indent=2, sort_keys=True) + "\n"
        (building / MANIFEST_NAME).write_text(text, "utf-8")
        os.replace(building, folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return exported


def _previous_export(folder: Path, manifest: dict[str, Any], precision: str) -> dict[str, Any] | None:
    """The manifest of an export of this very output in ``folder``, if there is one."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    previous: dict[str, Any] = json.loads(path.read_text("utf-8"))
    same = (
        previous.get("quantization", {}).get("precision") == precision
        and previous.get("exported_from") == manifest["shards"]
        and previous.get("fingerprint") == manifest["fingerprint"]
    )
    return previous if same else None


def _write_codes(
    output: str | Path,
    folder: Path,
    fingerprint: dict[str, Any],
    quantization: dict[str, Any],
    ranges: np.ndarray | None,
    batch_size: int,
) -> list[dict[str, Any]]:
    """The code shards of an export, one per ``batch_size`` rows; their manifest entries."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dimension = int(quantization["dimension"])
    width = dimension if quantization["precision"] == "int8" else (dimension + 7) // 8
    value = pa.int8() if quantization["precision"] == "int8" else pa.uint8()
    schema = pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(value, width), nullable=False),
        ],
        metadata={
            FINGERPRINT_KEY: json.dumps(fingerprint, sort_keys=True).encode(),
            QUANTIZATION_KEY: json.dumps(quantization).encode(),
        },
    )
    shards = []
    for number, batch in enumerate(iter_vectors(output, batch_size=batch_size), 1):
        codes = quantize(batch.vectors, quantization["precision"], ranges)
        table = pa.Table.from_arrays(
            [
                pa.array(batch.ids, pa.string()),
                pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), width),
            ],
            schema=schema,
        )
        path = folder / f"{SHARD_PREFIX}{number:06d}.parquet"
        pq.write_table(table, path)
        shards.append({"file": path.name, "rows": len(batch.ids), "bytes": path.stat().st_size})
    return shards
