"""What a GGUF file's metadata says about encoding with it, ours and llama.cpp's keys together.

A file from ``qzhou-plugins export gguf`` says everything (family, saved prompts, default length,
pooling, source): its prompt style is rebuilt from its family's record and its saved prompts, so that
a file gets the same instructions as the checkpoint it came from, task tables included. Any other
GGUF falls back on llama.cpp's keys alone: its architecture, whether its attention is causal, its
pooling type, its context length, and no instructions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ...families import UnknownFamilyError, family_named
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
    family = (
        metadata.get(keys.FAMILY)
        or recognised_family(metadata)
        or ("bert" if architecture in ENCODER_ARCHITECTURES else "decoder")
    )
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
        prompt_style=_prompt_style(path, metadata, family),
        source_model=metadata.get(keys.SOURCE_MODEL) or None,
    )


def recognised_family(metadata: dict[str, str]) -> str | None:
    """The family of a file from llama.cpp's own converter, from what it writes (it records no family):
    a Qwen3 that pools the last token, appending its end token to every text, is a Qwen3-Embedding
    (``conversion/qwen.py``: pooling from the folder's sentence-transformers Pooling module, the end
    token from its tokenizer's post-processor); a BERT that pools [CLS] is a BGE-style BERT. None:
    nothing recognised (a Qwen3 with no end token appended would not read its vectors where the
    family does)."""
    architecture = metadata.get("general.architecture", "")
    pooling = _POOLING_NAMES.get(metadata.get(f"{architecture}.pooling_type", ""))
    if (
        architecture == "qwen3"
        and pooling == "last"
        and metadata.get("tokenizer.ggml.add_eos_token") == "true"
    ):
        return "qwen3-embedding"
    if architecture == "bert" and pooling == "cls":
        return "bert"
    return None


def _prompt_style(path: str, metadata: dict[str, str], family: str) -> PromptStyle:
    """The prompt style of the file's family with the saved prompts it records; a family recognised in
    a file from elsewhere gets its record's; an unknown one none (no instructions)."""
    if keys.FAMILY not in metadata:
        return family_named(family).prompt_style() if recognised_family(metadata) else PromptStyle()
    try:
        record = family_named(family)
    except UnknownFamilyError:
        raise ModelLoadError(
            f"{path} is of the model family {family!r}, which this qzhou-plugins does not know: upgrade "
            "qzhou-plugins"
        ) from None
    try:
        saved: Any = json.loads(metadata.get(keys.SAVED_PROMPTS) or "{}")
        return record.prompt_style(saved)
    except (ValueError, TypeError, AttributeError) as error:
        raise ModelLoadError(
            f"{path} has damaged saved prompts in its {keys.SAVED_PROMPTS} key: {error}"
        ) from error


def with_family(path: str, facts: FileFacts, metadata: dict[str, str], requested: str | None) -> FileFacts:
    """``facts`` under the caller's ``family=``: a file of ours keeps the family it was exported as (it
    decided the file's attention, pooling and end token); a file from elsewhere takes any family of
    its backbone whose rules the file can follow (its instructions, its attention)."""
    if requested is None or requested == facts.family:
        return facts
    if keys.FAMILY in metadata:
        raise ValueError(
            f"family={requested!r}: {path} was exported as the {facts.family} family, which decided its "
            "attention, pooling and end token; leave family unset (export recognises the family from "
            "the checkpoint's files)"
        )
    record = family_named(requested)
    backbone = "encoder" if facts.architecture in ENCODER_ARCHITECTURES else "decoder"
    if record.backbone != backbone:
        raise ValueError(
            f"family={requested!r} is for {record.backbone} models, but {path} is a {facts.architecture} "
            f"{backbone}; leave family unset or name a {backbone} family"
        )
    if record.end_token and metadata.get("tokenizer.ggml.add_eos_token") != "true":
        raise ValueError(
            f"family={requested!r} reads its vectors at the end token, but the tokenizer of {path} appends "
            "none (tokenizer.ggml.add_eos_token), so they would be read at another token; export the "
            "checkpoint with qzhou-plugins export gguf"
        )
    pooled = _POOLING_NAMES.get(metadata.get(f"{facts.architecture}.pooling_type", ""))
    return replace(
        facts,
        family=record.name,
        prompt_style=record.prompt_style(),
        bidirectional=record.bidirectional or backbone == "encoder",
        pooling=pooled or record.pooling,
    )


RANK_POOLING = "4"
"""``enum llama_pooling_type`` of a reranker's file: its head scores a pair, it embeds nothing."""
RERANK_TEMPLATE_KEY = "tokenizer.chat_template.rerank"
"""Where llama.cpp's converter puts an LLM reranker's prompt, with ``{query}`` and ``{document}``."""


@dataclass(frozen=True)
class RerankFile:
    """How to score pairs with one GGUF reranker, as its metadata says."""

    kind: str
    activation: str
    """Applied to the file's first output: ``sigmoid`` or ``identity`` (the logit as it is)."""
    template: Any
    """An LLM reranker's :class:`~qzhou_plugins.config.LlmTemplate`, else None."""
    max_length: int
    source_model: str | None


def is_reranker(metadata: dict[str, str]) -> bool:
    """Whether the file scores pairs (rank pooling) rather than embedding texts."""
    architecture = metadata.get("general.architecture", "")
    return keys.RERANK_KIND in metadata or metadata.get(f"{architecture}.pooling_type") == RANK_POOLING


def rerank_file(path: str, metadata: dict[str, str], context_length: int) -> RerankFile:
    """The facts of a reranker's file: ours, or from llama.cpp's keys alone for a file from elsewhere
    (a ``rerank`` prompt means an LLM reranker; a cross-encoder's saved activation is unknown there,
    so its scores are the logits llama.cpp's server returns)."""
    from ...config import LlmTemplate

    kind = metadata.get(keys.RERANK_KIND) or ("llm" if RERANK_TEMPLATE_KEY in metadata else "cross-encoder")
    template = None
    if kind == "llm":
        saved = metadata.get(keys.RERANK_TEMPLATE)
        try:
            template = LlmTemplate.model_validate_json(saved) if saved else _foreign_template(metadata)
        except ValueError as error:
            raise ModelLoadError(f"{path} has no usable LLM reranker template: {error}") from error
    activation = metadata.get(keys.RERANK_ACTIVATION) or ("sigmoid" if kind == "llm" else "identity")
    return RerankFile(
        kind=kind,
        activation=activation,
        template=template,
        max_length=min(int(metadata.get(keys.MAX_LENGTH) or context_length), context_length),
        source_model=metadata.get(keys.SOURCE_MODEL) or None,
    )


def _foreign_template(metadata: dict[str, str]) -> Any:
    """llama.cpp's ``rerank`` prompt as a template: the lines before the query's, from the query's line
    to the document (the part cut when too long), the text after; its instruction is fixed in it."""
    from ...config import LlmTemplate

    prompt = metadata.get(RERANK_TEMPLATE_KEY, "")
    if "{query}" not in prompt or "{document}" not in prompt:
        raise ValueError("its rerank prompt has no {query} and {document}")
    # The body starts at the line of the query (a split at a line start tokenises as the whole prompt
    # does) and ends with the document; braces around the two fields are literal.
    start = prompt.rfind("\n", 0, prompt.index("{query}")) + 1
    end = prompt.index("{document}") + len("{document}")
    body = prompt[start:end].replace("{", "{{").replace("}", "}}")
    body = body.replace("{{query}}", "{query}").replace("{{document}}", "{document}")
    return LlmTemplate(
        prefix=prompt[:start],
        body=body,
        suffix=prompt[end:],
        yes_token="yes",  # the head in the file judges (its first output is P(yes)): not read here
        no_token="no",
        default_instruction="",
    )
