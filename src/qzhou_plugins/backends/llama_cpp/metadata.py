"""What a GGUF file's metadata says about encoding with it, ours and llama.cpp's keys together.

A file from ``qzhou-plugins export gguf`` says everything (prompt style, family, default length,
pooling, source); any other GGUF falls back on llama.cpp's keys alone: its architecture, whether
its attention is causal, its pooling type, its context length, and no instructions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ...instructions import PromptStyle
from ..base import ModelLoadError
from . import keys

ENCODER_ARCHITECTURES = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "modern-bert", "neo-bert"}
)
"""llama.cpp architectures of BERT-style encoders, which attend both ways unless a file says not."""
_POOLING_NAMES = {"1": "mean", "2": "cls", "3": "last"}


@dataclass(frozen=True)
class FileFacts:
    """How to encode with one GGUF file, as its metadata says."""

    architecture: str
    family: str
    gguf_type: str
    bidirectional: bool
    pooling: str
    max_length: int
    prompt_style: PromptStyle
    source_model: str | None


def describe(path: str, metadata: dict[str, str], context_length: int) -> FileFacts:
    """The facts of the file at ``path`` from its ``metadata`` (every key, as llama.cpp prints it)."""
    version = int(metadata.get(keys.FORMAT, "0") or 0)
    if version > keys.FORMAT_VERSION:
        raise ModelLoadError(
            f"{path} was written by a newer qzhou-plugins (GGUF format {version}, this one reads up to "
            f"{keys.FORMAT_VERSION}): upgrade qzhou-plugins"
        )
    architecture = metadata.get("general.architecture", "")
    causal = metadata.get(f"{architecture}.attention.causal")
    bidirectional = architecture in ENCODER_ARCHITECTURES if causal is None else causal == "false"
    family = metadata.get(keys.FAMILY) or ("bert" if architecture in ENCODER_ARCHITECTURES else "decoder")
    pooling = metadata.get(keys.POOLING) or _POOLING_NAMES.get(
        metadata.get(f"{architecture}.pooling_type", "")
    )
    return FileFacts(
        architecture=architecture,
        family=family,
        gguf_type=keys.type_name(int(metadata.get("general.file_type", "-1"))),
        bidirectional=bidirectional,
        pooling=pooling or ("mean" if bidirectional else "last"),
        max_length=min(int(metadata.get(keys.MAX_LENGTH) or context_length), context_length),
        prompt_style=_prompt_style(path, metadata),
        source_model=metadata.get(keys.SOURCE_MODEL) or None,
    )


def _prompt_style(path: str, metadata: dict[str, str]) -> PromptStyle:
    """The prompt style the file records; none (no instructions) for a file that records none."""
    if keys.PROMPT_TEMPLATE not in metadata:
        return PromptStyle()
    try:
        saved: Any = json.loads(metadata.get(keys.SAVED_PROMPTS) or "{}")
        return PromptStyle(
            template=metadata[keys.PROMPT_TEMPLATE],
            instructed_by_default=metadata.get(keys.INSTRUCTED_BY_DEFAULT) == "true",
            saved_prompts=saved,
        )
    except (ValueError, TypeError) as error:
        raise ModelLoadError(
            f"{path} has a damaged prompt style in its {keys.PROMPT_TEMPLATE} keys: {error}"
        ) from error
