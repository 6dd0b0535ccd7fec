"""What a GGUF file says about its vectors beyond llama.cpp's own keys, and which types are which.

llama.cpp knows the architecture, the tokenizer, whether attention is causal
(``<arch>.attention.causal``), the pooling (``<arch>.pooling_type``) and the weights' type
(``general.file_type``). It knows nothing of instructions or of where the weights came from: a file
written by ``qzhou-plugins export gguf`` carries those under the ``qzhou.`` keys below, so that the
llama.cpp backend restores the prompt style and the Chroma guard from the file alone. Other GGUF
files have none of them and are used with llama.cpp's keys only.

This module is plain data: the exporter (which needs only the ``gguf`` package) and the backend
(which needs llama-cpp-python) both read it, and neither drags the other's runtime in.
"""

from __future__ import annotations

FORMAT_VERSION = 3
"""Bumped when the meaning of a key changes; a newer file is refused with a message to upgrade.

2: :data:`FAMILY` names a family record (:mod:`qzhou_plugins.families`), whose task tables and
template a reader rebuilds from the name; version 1 knew only ``qzhou``, ``decoder`` and ``bert``, and
read the template from the file. A file of one of those three families is still written as version
1 (a reader of version 1 reads it right); any other family's file as 2, so that a reader of version
1 refuses it instead of giving it QZhou's task instructions.

3: a reranker's file (:data:`RERANK_KIND`, rank pooling); earlier readers would embed with it."""
EMBEDDER_FORMAT_VERSION = 2
"""The version an embedder's file of a family beyond version 1's is written as."""
VERSION_1_FAMILIES = frozenset({"qzhou", "decoder", "bert"})

FORMAT = "qzhou.format_version"
FAMILY = "qzhou.family"
"""The name of the model's family record, as :attr:`BackendFacts.family` (``qzhou``,
``qwen3-embedding``, ``bert``...): the reader rebuilds the prompt style from it."""
PROMPT_TEMPLATE = "qzhou.prompt.template"
"""The family's instruction template, for runtimes other than ours (we rebuild it from the family)."""
INSTRUCTED_BY_DEFAULT = "qzhou.prompt.instructed_by_default"
SAVED_PROMPTS = "qzhou.prompt.saved_prompts"
"""JSON object: the model's own sentence-transformers prompts (query, document...)."""
TASKS = "qzhou.tasks"
"""JSON object: the published per-task instruction table, for runtimes other than ours."""
ADDED_TOKENS = "qzhou.tokenizer.added_tokens"
"""JSON list: the tokens the Hugging Face tokenizer matches literally in a text (its special and
added tokens). llama.cpp also treats tokens that merely look special (Qwen's ``</s>``) as such; the
backend parses exactly these instead, so that a text gets the Hugging Face tokens."""
MAX_LENGTH = "qzhou.max_length"
"""Tokens per text the source model encodes by default (the context length is the position limit)."""
POOLING = "qzhou.pooling"
SOURCE_MODEL = "qzhou.source.model"
"""The model name the file was exported from, as given: what a Chroma collection records."""
SOURCE_FINGERPRINT = "qzhou.source.fingerprint"
RERANK_KIND = "qzhou.rerank.kind"
"""``cross-encoder`` or ``llm``: the file scores pairs (rank pooling) and embeds nothing."""
RERANK_ACTIVATION = "qzhou.rerank.activation"
"""A cross-encoder's score function as sentence-transformers saved it (``sigmoid``, ``identity``):
the file's rank pooling gives the logit, and llama.cpp's server returns it as it is."""
RERANK_TEMPLATE = "qzhou.rerank.template"
"""JSON object: an LLM reranker's whole template (:class:`~qzhou_plugins.config.LlmTemplate`), so
that an instruction other than the default reaches it (llama.cpp's ``rerank`` template has it fixed)."""
"""JSON object: the source's name, architectures, dtype, attention, pooling and length."""

GGUF_FILE_TYPES: dict[str, int] = {"f32": 0, "f16": 1, "q8_0": 7, "q4_k_m": 15, "bf16": 32}
"""Our names of the weight types, to llama.cpp's ``general.file_type`` (``enum llama_ftype``)."""

EXPORT_TYPES = ("f16", "bf16", "q8_0", "q4_k_m")
"""The types ``export gguf --type`` writes; f16 is the default."""

REFERENCE_VECTORS = "reference"
"""The vector family of the torch encoder, and of every runtime whose vectors are interchangeable
with its own (a collection may mix them)."""

INTERCHANGEABLE_TYPES = frozenset({"f32", "f16"})
"""GGUF types whose vectors match the torch (fp32) encoder's closely enough to share a collection
with them: min cosine >= 0.9999 on every model of ``benchmarks/bench_gguf.py`` (docs/performance.md).
f16 does; bf16 does not (0.9996 on the tiny QZhou checkpoint: llama.cpp also rounds activations to
bf16), nor q8_0 or q4_k_m."""


def format_version(family: str) -> int:
    """The lowest format version that reads a file of ``family`` right (see :data:`FORMAT_VERSION`)."""
    return 1 if family in VERSION_1_FAMILIES else EMBEDDER_FORMAT_VERSION


def type_name(file_type: int) -> str:
    """Our name of a ``general.file_type`` value (``ftype-N`` for one we do not name)."""
    names = {number: name for name, number in GGUF_FILE_TYPES.items()}
    return names.get(file_type, f"ftype-{file_type}")


def vector_family(gguf_type: str) -> str:
    """The family of a GGUF type's vectors: :data:`REFERENCE_VECTORS` when interchangeable with the
    torch encoder's, else one of its own (``gguf-q8_0``), which no collection mixes with another."""
    return REFERENCE_VECTORS if gguf_type in INTERCHANGEABLE_TYPES else f"gguf-{gguf_type}"
