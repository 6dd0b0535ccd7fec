"""Which source tensor becomes which GGUF tensor, in which type, and its bytes.

Names come from the ``gguf`` package's own table for each architecture (the names llama.cpp loads),
so nothing is spelt twice. Types follow llama.cpp's rules: vectors (norms, biases) and the BERT
position and token-type tables stay f32, everything else takes the file's type; a matrix whose
rows do not split into Q8_0 blocks falls back to f16 rather than failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._library import gguf
from .source import DECODERS, GGUFExportError

TENSOR_TYPES = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
"""The file types written here, as the type of their matrices (k-quants come from llama.cpp)."""

_ARCHITECTURES = {
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
    "bert": gguf.MODEL_ARCH.BERT,
}
_UNUSED = ("lm_head.", "pooler.", "cls.", "embeddings.position_ids")
"""Source tensors an embedding never uses: a language-model or classifier head, BERT's pooler."""
_KEPT_F32 = (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the file: where it comes from, its GGUF name, shape (torch order) and type."""

    source: str
    file: Path
    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    rows: tuple[int, ...] | None = None
    """The source rows kept, in this order (a reranker's yes/no head, XLM-R's positions); None: all."""

    @property
    def nbytes(self) -> int:
        return math.prod(gguf.quant_shape_to_byte_shape(self.shape, self.qtype))

    def select(self, data: np.ndarray) -> np.ndarray:
        """The rows of the source tensor this tensor keeps."""
        return data if self.rows is None else data[list(self.rows)]

    def encode(self, data: np.ndarray) -> np.ndarray:
        """``data`` (float32) in this tensor's type, as the bytes the file holds."""
        return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), self.qtype)


def plan_tensors(
    architecture: str,
    blocks: int,
    found: dict[str, tuple[Path, tuple[int, ...]]],
    gguf_type: str,
    renames: Mapping[str, tuple[str, tuple[int, ...] | None]] | None = None,
) -> list[PlannedTensor]:
    """The file's tensors from the checkpoint's, every one accounted for: an unknown tensor is an
    error, since dropping it silently could change the vectors. ``renames`` (a reranker's head)
    gives a source tensor the name to map it by, and the rows to keep; a renamed tensor that is
    also a tensor of the model's own (a tied head) is written under both names."""
    names = gguf.get_tensor_name_map(_ARCHITECTURES[architecture], blocks)
    kept_f32 = {gguf.TENSOR_NAMES[kind] for kind in _KEPT_F32}
    renames = renames or {}
    planned, unknown = [], []
    entries = [(source, _canonical(architecture, source), None) for source in found]
    for source, (target, rows) in renames.items():
        if not source.endswith("embed_tokens.weight"):  # a tied head is the embedding too: kept
            entries = [entry for entry in entries if entry[0] != source]
        entries.append((source, target, rows))
    for source, canonical, rows in entries:
        file, shape = found[source]
        if rows is not None:
            shape = (len(rows), *shape[1:])
        if canonical.startswith(_UNUSED) and rows is None:
            continue
        mapped = names.get_type_and_name(canonical, try_suffixes=(".weight", ".bias"))
        if mapped is None and rows is not None and canonical.split(".")[0] == "cls":
            mapped = (None, canonical)  # already llama.cpp's name (a yes/no head's cls.output)
        if mapped is None:
            unknown.append(source)
            continue
        name = mapped[1]
        vector_like = len(shape) <= 1 or name.endswith(("_norm.weight", ".bias"))
        qtype = gguf.GGMLQuantizationType.F32 if vector_like else TENSOR_TYPES[gguf_type]
        if name.rsplit(".", 1)[0] in kept_f32:
            qtype = gguf.GGMLQuantizationType.F32
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        if shape[-1] % block:
            qtype = gguf.GGMLQuantizationType.F16
        planned.append(PlannedTensor(source, file, name, shape, qtype, rows))
    if unknown:
        shown = ", ".join(sorted(unknown)[:6]) + (f" (+{len(unknown) - 6} more)" if len(unknown) > 6 else "")
        raise GGUFExportError(
            f"the checkpoint has tensors llama.cpp's {architecture} architecture has no place for: {shown}"
        )
    return planned


def _canonical(architecture: str, name: str) -> str:
    """The source name as the ``gguf`` tables spell it: Qwen2 and Qwen3 weights with their ``model.``
    prefix (QZhou ships either form; a sentence-transformers Qwen3-Embedding folder none), BERT ones
    without ``bert.``, LayerNorm's old gamma/beta as weight/bias."""
    if architecture in DECODERS:
        return name if name.startswith(("model.", "lm_head.")) else f"model.{name}"
    name = name.removeprefix("bert.").removeprefix("roberta.")
    if name.endswith(".gamma"):
        return name.removesuffix(".gamma") + ".weight"
    if name.endswith(".beta"):
        return name.removesuffix(".beta") + ".bias"
    return name
