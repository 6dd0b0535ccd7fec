"""Which precision a local model computes in: the weights' dtype, and the dtype of its matrix products.

``dtype="auto"`` asks for the processor's own speed without moving the vectors:

- CUDA with bf16: bf16 weights (half the memory of fp32; what the authors of QZhou run).
- A CPU that computes bf16 natively (x86 with AVX512_BF16 or AMX): float32 weights, matrix products
  and attention in bf16 under ``torch.autocast``. The residual stream, layer and RMS norms and pooling
  stay in fp32, which is what keeps the vectors within cosine 0.9999 of fp32 (measured per family in
  ``benchmarks/bench_encode.py``); bf16 weights lose more (MiniLM on SciFact: min cosine 0.99992
  against 0.99997 for autocast). The fp32 weights are shared with a ``dtype="float32"`` encoder of
  the same checkpoint: one copy in memory for both.
- Any other CPU (AVX2 only, Arm): fp32, as before. Emulated bf16 there is slower than fp32.

An explicit ``dtype`` is honoured as it is (weights in that dtype, no autocast): ``float32`` gives the
fp32 vectors exactly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CPU_BF16_VARIABLE", "OnDevice", "Precision", "cpu_computes_bf16", "pick_precision"]

CPU_BF16_VARIABLE = "QZHOU_PLUGINS_CPU_BF16"
"""``0`` keeps ``auto`` at fp32 on a CPU with bf16 instructions, ``1`` takes the bf16 path on one
without them (slower there: emulated; what measures the vectors' agreement on any machine)."""


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512_BF16, or AMX tiles), as torch's own probe says,
    unless :data:`CPU_BF16_VARIABLE` says otherwise.

    The probes are private to torch (``torch.cpu._is_avx512_bf16_supported``, 2.2 and later): an
    older torch without them is taken to have none, which only costs speed, never vectors.
    """
    forced = os.environ.get(CPU_BF16_VARIABLE, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


@dataclass(frozen=True)
class Precision:
    """The dtypes one local runtime computes with; ``compute`` differs from ``weights`` under autocast."""

    weights: torch.dtype
    compute: torch.dtype
    device_type: str

    @property
    def autocast(self) -> bool:
        return self.compute != self.weights

    @property
    def name(self) -> str:
        """The compute dtype's name (``bfloat16``): what facts, fingerprints and banners show."""
        return str(self.compute).removeprefix("torch.")

    def describe(self) -> str:
        """For people: ``bfloat16 (autocast over float32 weights)``, or the dtype alone."""
        if not self.autocast:
            return self.name
        return f"{self.name} (autocast over {str(self.weights).removeprefix('torch.')} weights)"

    def runtime(self, device: torch.device) -> str:
        """What the facts of a local runtime say: ``cpu, bfloat16 (autocast over float32 weights)``."""
        return f"{device}, {self.describe()}"

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Where the forward pass runs: under ``torch.autocast`` when the precision asks for it."""
        if not self.autocast:
            yield
            return
        with torch.autocast(device_type=self.device_type, dtype=self.compute):
            yield


def pick_precision(
    requested: str, device: torch.device, cpu_has_bf16: Callable[[], bool] = cpu_computes_bf16
) -> Precision:
    """The precision for ``requested`` (a dtype name or ``auto``) on ``device`` (see the module's text)."""
    if requested != "auto":
        dtype = getattr(torch, requested)
        return Precision(dtype, dtype, device.type)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision(torch.bfloat16, torch.bfloat16, device.type)
    if device.type == "cpu" and cpu_has_bf16():
        return Precision(torch.float32, torch.bfloat16, device.type)
    return Precision(torch.float32, torch.float32, device.type)


class OnDevice:
    """Where a local runtime (the encoder's, a reranker's) computes, and in what: one answer for both."""

    loaded: Any
    precision: Precision

    @property
    def device(self) -> torch.device:
        return self.loaded.device  # type: ignore[no-any-return]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (bf16 under autocast over fp32 weights)."""
        return self.precision.compute
