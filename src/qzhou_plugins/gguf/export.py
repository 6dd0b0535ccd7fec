"""``export_gguf``: a checkpoint -> one GGUF file that any llama.cpp runtime embeds with correctly.

What makes the file right for llama.cpp with no extra flags: the architecture whose maths equal
the source's (Qwen2 for QZhou and gte-Qwen2, Qwen3 for Qwen3-Embedding, BERT for BGE-, E5- and
MiniLM-style encoders), ``<arch>.attention.causal`` as the family attends (QZhou: a naive Qwen2
conversion would be causal, with silently wrong vectors), the family's pooling as the pooling type
(last token for Qwen3-Embedding), its context length, and a tokenizer that cuts texts as the Hugging
Face one does, the family's end token included. What llama.cpp has no key for (the family, the
saved prompts, the task table, where the weights came from) goes under our own ``qzhou.`` keys
(:mod:`qzhou_plugins.backends.llama_cpp.keys`).

The file is written under a temporary name and renamed at the end: an interrupted export leaves no
file that looks complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..backends.llama_cpp import keys
from ..instructions import published_tasks
from ._library import gguf
from .quantize import quantize_file, require_llama_cpp
from .rerankers import RERANK_POOLING, add_reranker_keys, with_head
from .source import (
    DECODERS,
    GGUFExportError,
    Source,
    portable_name,
    read_source,
    read_tensors,
    rope_theta,
    tensor_names,
)
from .tensors import TENSOR_TYPES, plan_tensors
from .vocabulary import add_vocabulary

POOLING_TYPES = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "last": gguf.PoolingType.LAST}
_LOSSLESS = {"bfloat16": "bf16", "float16": "f16"}
"""The type that holds a source dtype exactly (anything else: f32), for the file k-quants start from."""


def export_gguf(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    gguf_type: str = "f16",
    *,
    threads: int | None = None,
    family: str | None = None,
    show_progress: bool = False,
) -> Path:
    """Export ``model`` (a folder, a hub id or the demo model) to the GGUF file ``out`` as ``gguf_type``.

    f16, bf16 and q8_0 are written here with the ``gguf`` package; q4_k_m is llama.cpp's quantizer
    (the ``llama`` extra) run on a lossless file written first. ``family`` is an embedder's family
    (None: recognised from the checkpoint), checked against the checkpoint as ``family=`` is. A
    cross-encoder or LLM reranker is written for llama.cpp's rank pooling (:mod:`.rerankers`).
    Returns the path written.
    """
    if gguf_type not in keys.EXPORT_TYPES:
        raise GGUFExportError(
            f"unknown GGUF type {gguf_type!r}; choose one of {', '.join(keys.EXPORT_TYPES)}"
        )
    target = Path(os.fspath(out)).expanduser()
    if target.suffix != ".gguf":
        raise GGUFExportError(
            f"the output file must end in .gguf (that is how it is recognised), not {target}"
        )
    if target.is_dir():
        raise GGUFExportError(f"{target} is a folder; give the path of the .gguf file to write")
    target.parent.mkdir(parents=True, exist_ok=True)
    quantized = gguf_type not in TENSOR_TYPES
    if quantized:
        require_llama_cpp(f"--type {gguf_type}")  # before minutes of work, not after
    source = with_head(read_source(os.fspath(model), family), family)
    written = _LOSSLESS.get(source.dtype, "f32") if quantized else gguf_type
    partial = target.with_name(target.name + ".partial")
    try:
        write_file(source, partial, written, show_progress=show_progress)
        if quantized:
            lossless, partial = partial, target.with_name(target.name + ".quantizing")
            try:
                quantize_file(lossless, partial, gguf_type, threads)
            finally:
                lossless.unlink(missing_ok=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def write_file(source: Source, path: Path, gguf_type: str, *, show_progress: bool = False) -> None:
    """Metadata, tokenizer and tensors of ``source`` in ``path``, one tensor in memory at a time."""
    found = tensor_names(source.facts.path)
    blocks = int(source.config.num_hidden_layers)
    head = source.head
    planned = plan_tensors(source.architecture, blocks, found, gguf_type, head.renames if head else None)
    writer = gguf.GGUFWriter(path, source.architecture)
    _add_model_keys(writer, source, gguf_type)
    if head is None:
        _add_our_keys(writer, source)
    else:
        add_reranker_keys(writer, head)
        writer.add_string(keys.SOURCE_MODEL, portable_name(source.name))
        writer.add_string(keys.SOURCE_FINGERPRINT, json.dumps(source.fingerprint()))
    add_vocabulary(writer, source)
    for tensor in planned:
        writer.add_tensor_info(tensor.name, tensor.shape, np.dtype(np.float32), tensor.nbytes, tensor.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    arrays = read_tensors([(tensor.source, tensor.file) for tensor in planned])
    try:
        progress = tqdm(zip(planned, arrays, strict=False), total=len(planned), disable=not show_progress)
        for tensor, whole in progress:
            data = tensor.select(whole)
            if tuple(data.shape) != tensor.shape:
                raise GGUFExportError(
                    f"tensor {tensor.source} has shape {data.shape}, its header says {tensor.shape}"
                )
            writer.write_tensor_data(tensor.encode(data))
    finally:
        writer.close()


def _add_model_keys(writer: gguf.GGUFWriter, source: Source, gguf_type: str) -> None:
    """llama.cpp's own keys: shape, attention, pooling, context length, type."""
    config, defaults = source.config, source.facts.defaults
    writer.add_name(Path(source.name).name or source.name)
    writer.add_file_type(keys.GGUF_FILE_TYPES[gguf_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(int(defaults["position_limit"]))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_causal_attention(source.architecture in DECODERS and not source.facts.bidirectional)
    pooling = RERANK_POOLING if source.head else POOLING_TYPES[defaults["default_pooling"]]
    writer.add_pooling_type(pooling)
    if source.architecture in DECODERS:
        writer.add_head_count_kv(int(config.num_key_value_heads))
        writer.add_rope_freq_base(rope_theta(config))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        writer.add_key_length(int(head_dim))  # Qwen3's need not be hidden / heads (0.6B: 128, not 64)
        writer.add_value_length(int(head_dim))
    else:
        writer.add_layer_norm_eps(float(config.layer_norm_eps))


def _add_our_keys(writer: gguf.GGUFWriter, source: Source) -> None:
    """What llama.cpp has no key for: the prompt style, the task table, the source."""
    defaults = source.facts.defaults
    style = defaults["prompt_style"]
    writer.add_uint32(keys.FORMAT, keys.format_version(defaults["family"]))
    writer.add_string(keys.FAMILY, defaults["family"])
    writer.add_string(keys.PROMPT_TEMPLATE, style.template)
    writer.add_bool(keys.INSTRUCTED_BY_DEFAULT, style.instructed_by_default)
    writer.add_string(keys.SAVED_PROMPTS, json.dumps(style.saved_prompts, ensure_ascii=False))
    if style.published_tasks and style.instructed_by_default:
        published = published_tasks(style.published_tasks)
        table = {name: task.model_dump(exclude={"name"}) for name, task in published.items()}
        writer.add_string(keys.TASKS, json.dumps(table, ensure_ascii=False))
    writer.add_uint32(keys.MAX_LENGTH, int(defaults["default_max_length"]))
    writer.add_string(keys.POOLING, defaults["default_pooling"])
    writer.add_string(keys.SOURCE_MODEL, portable_name(source.name))
    writer.add_string(keys.SOURCE_FINGERPRINT, json.dumps(source.fingerprint()))
