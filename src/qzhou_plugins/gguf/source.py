"""The checkpoint being exported: what it is, which llama.cpp architecture takes it, and its tensors.

The facts come from the same reader as the local backend's (:func:`read_checkpoint`): family,
bidirectional attention, pooling, default length and prompt style are decided once, for torch and
for the file alike. The tensors are read one at a time from the safetensors files, so that a 15 GB
checkpoint is exported with one tensor in memory, not all of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.local.loading import CheckpointFacts, read_checkpoint, resolve_model_path

ARCHITECTURES = {"qwen2": "qwen2", "qwen3": "qwen3", "bert": "bert", "xlm-roberta": "bert"}
"""Source ``model_type`` -> the llama.cpp architecture that runs it with the same maths."""
DECODERS = frozenset({"qwen2", "qwen3"})
"""The llama.cpp architectures above that are decoders (RoPE, RMS norm, grouped key/value heads)."""
SUPPORTED = (
    "QZhou, gte-Qwen2 and other Qwen2-shaped decoders; Qwen3-Embedding and other Qwen3-shaped "
    "decoders; BERT-style encoders and their sentence-transformers folders (MiniLM, BGE, E5, Nomic's "
    "BERT-shaped ones); BERT and XLM-RoBERTa cross-encoders; Qwen3-Reranker"
)
"""What the exporter takes, for the message that refuses anything else."""


class GGUFExportError(ValueError):
    """The model cannot be exported as it is; the message says why and, where there is one, what to do."""


@dataclass(frozen=True)
class Source:
    """A checkpoint to export: its name as given, its facts and its llama.cpp architecture."""

    name: str
    facts: CheckpointFacts
    architecture: str
    head: Any = None
    """A reranker's :class:`~.rerankers.RerankerHead` (set by :func:`~.rerankers.with_head`); None
    for an embedder."""

    @property
    def kind(self) -> str:
        """``embedding``, ``cross-encoder`` or ``llm``."""
        return "embedding" if self.head is None else str(self.head.kind)

    @property
    def config(self) -> Any:
        return self.facts.hf_config

    @property
    def dtype(self) -> str:
        """The dtype the weights are stored in (what a lossless intermediate file keeps)."""
        return str(getattr(self.config, "dtype", None) or "float32").removeprefix("torch.")

    def fingerprint(self) -> dict[str, Any]:
        """What the file records about where its weights came from."""
        return {
            "model": portable_name(self.name),
            "architectures": list(self.config.architectures or []),
            "model_type": self.config.model_type,
            "dtype": self.dtype,
            "bidirectional": self.facts.bidirectional,
            "pooling": self.facts.defaults["default_pooling"],
            "max_length": self.facts.defaults["default_max_length"],
            "family": self.facts.family.name,
            "kind": self.kind,
        }


def portable_name(model: str) -> str:
    """A local folder as its absolute path (a relative one would mean another folder elsewhere); a hub
    id or the demo model's name as given."""
    local = Path(model).expanduser()
    return str(local.resolve()) if local.is_dir() else model


def read_source(model: str, family: str | None = None) -> Source:
    """The checkpoint named ``model`` (a folder, a hub id or the demo model) as the embedder ``family``
    (None: recognised), refused with a clear error when llama.cpp has no architecture with the same
    maths."""
    from ..backends.base import ModelLoadError

    try:
        facts = read_checkpoint(model, resolve_model_path(model), family=family)
    except ModelLoadError as error:
        raise GGUFExportError(str(error)) from error
    model_type = facts.hf_config.model_type
    architecture = ARCHITECTURES.get(model_type)
    if architecture is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise GGUFExportError(
            f"cannot export {model!r} ({facts.family.name} family) to GGUF: its model type "
            f"{model_type!r} is not one this exporter maps to llama.cpp (known: {known}: {SUPPORTED})"
        )
    source = Source(model, facts, architecture)
    _check_supported(source)
    return source


def _check_supported(source: Source) -> None:
    """Refuse what llama.cpp would run with different maths than torch: silently wrong vectors."""
    config, problems = source.config, []
    if source.facts.defaults["default_pooling"] == "max":
        problems.append("max pooling (llama.cpp pools by mean, CLS or last token only)")
    if source.architecture in DECODERS:
        rope = getattr(config, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default":
            problems.append(f"RoPE scaling {rope.get('rope_type')!r}")
        if getattr(config, "use_sliding_window", False):
            problems.append("sliding-window attention")
        if source.architecture == "qwen3" and getattr(config, "attention_bias", False):
            problems.append("query/key/value biases in a Qwen3 model")
    else:
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            problems.append(f"position embeddings {config.position_embedding_type!r}")
        if getattr(config, "hidden_act", "gelu") != "gelu":
            problems.append(f"activation {config.hidden_act!r}")
    if problems:
        raise GGUFExportError(
            f"cannot export {source.name!r} to GGUF: llama.cpp has no {'; '.join(problems)}"
        )


def rope_theta(config: Any) -> float:
    """RoPE's base frequency, wherever this transformers version keeps it."""
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def tensor_names(path: Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """Every tensor of the checkpoint's safetensors files: name -> (file, shape), read from the headers."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise GGUFExportError(
            f"{path} has no .safetensors weights: save the model with safetensors (transformers' default) "
            "and export again"
        )
    found: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for file in files:
        with file.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        for name, info in header.items():
            if name != "__metadata__":
                found[name] = (file, tuple(int(n) for n in info["shape"]))
    return found


def read_tensors(names: list[tuple[str, Path]]) -> Iterator[np.ndarray]:
    """The tensors ``(name, file)`` as float32 arrays, in the order given, one at a time.

    Through torch, because numpy has no bfloat16 (QZhou's weights are bf16).
    """
    from safetensors import safe_open

    handles: dict[Path, Any] = {}
    try:
        for name, file in names:
            if file not in handles:
                handles[file] = safe_open(str(file), framework="pt")
            yield handles[file].get_tensor(name).float().numpy()
    finally:
        handles.clear()
