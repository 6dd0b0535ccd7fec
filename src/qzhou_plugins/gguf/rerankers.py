"""Rerankers in GGUF: what llama.cpp's rank pooling reads, and what it cannot run alike (refused).

llama.cpp scores a pair with ``pooling_type`` rank (``llama-graph.cpp``): the hidden state of the
first token (a cross-encoder) or of the last one (causal attention: an LLM reranker) goes through
``cls.weight``/``cls.bias`` and a tanh when the file has them, then ``cls.output.weight``/``.bias``;
for a Qwen3 file a softmax over the outputs follows. So:

- a BERT cross-encoder's pooler (``pooler.dense``, tanh) is ``cls`` and its ``classifier`` is
  ``cls.output``; an XLM-RoBERTa one's ``classifier.dense`` and ``classifier.out_proj`` are the same
  pair under the names the ``gguf`` package maps already. One label only: llama.cpp's server scores
  by the first output. The score in the file is the logit; the activation sentence-transformers
  saved (sigmoid for one label) is recorded under our key and applied by our backend, not by
  llama.cpp's server (its ``/v1/rerank`` returns ``embd[0]`` as it is).
- a Qwen3-Reranker (a ``Qwen3ForCausalLM`` with the yes/no template) keeps the ``lm_head`` rows of
  "yes" and "no", in that order, as a 2-row ``cls.output.weight``; the softmax makes the first
  output P(yes) = sigmoid(logit(yes) - logit(no)), the torch reranker's score. The prompt goes in
  as the ``rerank`` chat template with ``{query}`` and ``{document}``, as llama.cpp's own converter
  writes it (``conversion/qwen.py``, ``Qwen3Model.set_gguf_parameters``), the default instruction
  filled in; our key keeps the template whole, so that our backend takes other instructions.

llama.cpp gives every token segment 0 (``models/bert.cpp`` adds row 0 of ``token_types`` to all),
so a BERT cross-encoder whose segment rows differ would score otherwise than torch: refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.llama_cpp import keys
from ._library import gguf
from .source import GGUFExportError, Source, read_tensors

RERANK_POOLING = gguf.PoolingType.RANK
ROWS = tuple[int, ...]


@dataclass(frozen=True)
class RerankerHead:
    """What a reranker's file needs beyond an embedder's: its head tensors, scale and pair layout."""

    kind: str
    """``cross-encoder`` or ``llm``."""
    max_length: int
    renames: dict[str, tuple[str, ROWS | None]] = field(default_factory=dict)
    """Source tensor -> (the name the ``gguf`` tables map, the rows kept or None for all)."""
    activation: str | None = None
    template: Any = None
    """An LLM reranker's :class:`~qzhou_plugins.config.LlmTemplate`."""
    pair: tuple[int, int, bool] | None = None
    """A cross-encoder's pair layout: (start id, separator id, whether the separator is doubled)."""


def with_head(source: Source, family: str | None = None) -> Source:
    """``source`` with its reranker head read (see :func:`read_head`)."""
    return replace(source, head=read_head(source.name, source.facts, source.architecture, family))


def read_head(model: str, facts: Any, architecture: str, family: str | None = None) -> RerankerHead | None:
    """The reranker head of the checkpoint, None for an embedder: the torch reranker's rule
    (:func:`checkpoint_kind`), except that a causal LM exported with an embedder ``family`` is that
    embedder; refused where llama.cpp differs, and a cross-encoder with a ``family``."""
    from ..backends.base import ModelLoadError
    from ..backends.local.reranker_loading import checkpoint_kind
    from ..config import RerankerConfig

    try:
        kind = checkpoint_kind(RerankerConfig(model=model))
    except ModelLoadError:  # a causal LM with no reranker template: a decoder embedder
        return None
    if kind == "embedding" or (kind == "llm" and family is not None):
        return None
    if family is not None:
        raise GGUFExportError(
            f"family={family!r}: {model!r} is a {kind} reranker, which has no embedder family"
        )
    if kind == "llm":
        return _llm_head(model, facts, architecture)
    return _cross_encoder_head(model, facts, architecture)


def _cross_encoder_head(model: str, facts: Any, architecture: str) -> RerankerHead:
    from ..backends.local.reranker_loading import _cross_encoder_head as torch_head
    from ..config import RerankerConfig

    config = facts.hf_config
    if architecture != "bert":
        raise GGUFExportError(
            f"cannot export {model!r} to GGUF: llama.cpp's rank pooling runs BERT and XLM-RoBERTa "
            f"cross-encoders, not {config.model_type!r} ones"
        )
    labels = int(config.num_labels)
    if labels != 1:
        raise GGUFExportError(
            f"cannot export {model!r} to GGUF: it has {labels} labels, and llama.cpp's rerank scores by "
            "the first output only; a one-label cross-encoder exports"
        )
    activation = torch_head(RerankerConfig(model=model), config, facts.path).activation
    found = _tensor_files(facts.path)
    renames: dict[str, tuple[str, ROWS | None]] = {}
    for name in found:
        bare = name.split(".", 1)[1] if name.startswith(("bert.", "roberta.")) else name
        if bare.startswith("pooler.dense."):  # BERT's head: tanh(pooler) -> classifier
            renames[name] = ("classifier.dense." + bare.rsplit(".", 1)[1], None)
        elif bare in ("classifier.weight", "classifier.bias"):
            renames[name] = ("classifier.out_proj." + bare.rsplit(".", 1)[1], None)
    if not any(target.startswith("classifier.out_proj") for target, _ in renames.values()) and not any(
        name.startswith("classifier.out_proj") for name in found
    ):
        raise GGUFExportError(f"cannot export {model!r} to GGUF: no classifier head tensor was found")
    if config.model_type == "xlm-roberta":
        renames.update(_position_offset(found, config))
    _check_segments(model, found)
    return RerankerHead(
        kind="cross-encoder",
        max_length=int(facts.defaults["default_max_length"]),
        renames=renames,
        activation=activation,
        pair=_pair_layout(model, facts.tokenizer),
    )


def _llm_head(model: str, facts: Any, architecture: str) -> RerankerHead:
    from ..backends.local.reranker_loading import LLM_DEFAULT_MAX_LENGTH
    from ..rerank.formats import LLM_TEMPLATES

    config = facts.hf_config
    if architecture != "qwen3":
        raise GGUFExportError(
            f"cannot export {model!r} to GGUF: llama.cpp's rank pooling judges yes/no with Qwen3 "
            f"rerankers only (it applies the softmax for qwen3), not {config.model_type!r} ones"
        )
    template = LLM_TEMPLATES["qwen3"]
    vocabulary = facts.tokenizer.get_vocab()
    missing = [token for token in (template.yes_token, template.no_token) if token not in vocabulary]
    if missing:
        raise GGUFExportError(f"cannot export {model!r} to GGUF: no single token {missing[0]!r} to judge by")
    rows = (vocabulary[template.yes_token], vocabulary[template.no_token])  # yes first: softmax[0] = P(yes)
    found = _tensor_files(facts.path)
    tied = bool(getattr(config, "tie_word_embeddings", False)) or "lm_head.weight" not in found
    head = next(name for name in found if name.endswith("embed_tokens.weight")) if tied else "lm_head.weight"
    return RerankerHead(
        kind="llm",
        max_length=min(LLM_DEFAULT_MAX_LENGTH, int(facts.defaults["position_limit"])),
        renames={head: ("cls.output.weight", rows)},  # an extra copy when tied
        template=template,
    )


def _tensor_files(path: Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    from .source import tensor_names

    return tensor_names(path)


def _position_offset(found: dict[str, tuple[Path, tuple[int, ...]]], config: Any) -> dict[str, Any]:
    """XLM-RoBERTa counts positions from ``pad_token_id + 1``; llama.cpp from 0: the rows before go."""
    offset = int(config.pad_token_id) + 1
    name = next(n for n in found if n.endswith("embeddings.position_embeddings.weight"))
    bare = name.split(".", 1)[1] if name.startswith("roberta.") else name
    return {name: (bare, tuple(range(offset, found[name][1][0])))}


def _check_segments(model: str, found: dict[str, tuple[Path, tuple[int, ...]]]) -> None:
    """Refuse a cross-encoder that tells query from candidate by segment: llama.cpp cannot."""
    name = next((n for n in found if n.endswith("token_type_embeddings.weight")), None)
    if name is None or found[name][1][0] < 2:
        return
    table = next(read_tensors([(name, found[name][0])]))
    if not np.array_equal(table[1:], np.broadcast_to(table[0], table[1:].shape)):
        raise GGUFExportError(
            f"cannot export {model!r} to GGUF: it tells the query from the candidate by segment (its "
            "token_type_embeddings rows differ), and llama.cpp gives every token segment 0, so its scores "
            "would differ from torch's; rerank with the checkpoint itself"
        )


def _pair_layout(model: str, tokenizer: Any) -> tuple[int, int, bool]:
    """The tokenizer's own pair format as llama.cpp's server builds it: ``start q sep d sep`` (BERT)
    or ``start q sep sep d sep`` (RoBERTa); anything else is refused."""
    query = tokenizer("q", add_special_tokens=False)["input_ids"]
    body = tokenizer("d", add_special_tokens=False)["input_ids"]
    pair = tokenizer("q", "d")["input_ids"]
    start, rest = pair[:1], pair[1:]
    if rest[: len(query)] == query and rest[-len(body) - 1 : -1] == body:
        middle = rest[len(query) : -len(body) - 1]
        end = rest[-1]
        if len(start) == 1 and middle in ([end], [end, end]):
            return start[0], end, len(middle) == 2
    raise GGUFExportError(
        f"cannot export {model!r} to GGUF: its tokenizer frames a pair as {pair} for 'q' and 'd', which "
        "llama.cpp's rerank does not build (it builds [start] q [sep] d [sep], the separator once or twice)"
    )


def add_reranker_keys(writer: gguf.GGUFWriter, head: RerankerHead) -> None:
    """llama.cpp's keys of a reranker (labels, the rerank template) and ours (kind, scale, template)."""
    writer.add_uint32(keys.FORMAT, keys.FORMAT_VERSION)
    writer.add_string(keys.RERANK_KIND, head.kind)
    writer.add_uint32(keys.MAX_LENGTH, head.max_length)
    if head.kind == "cross-encoder":
        writer.add_string(keys.RERANK_ACTIVATION, str(head.activation))
        return
    template = head.template
    writer.add_classifier_output_labels([template.yes_token, template.no_token])
    body = template.body.format(
        instruction=template.default_instruction, query="{query}", document="{document}"
    )
    writer.add_chat_template([{"name": "rerank", "template": template.prefix + body + template.suffix}])
    writer.add_string(keys.RERANK_TEMPLATE, template.model_dump_json())


def add_pair_tokens(writer_special: Any, head: RerankerHead) -> None:
    """The special tokens of a cross-encoder's pair: start, separator (as end token too: the server
    closes each side with it) and whether it is doubled."""
    assert head.pair is not None
    start, separator, doubled = head.pair
    writer_special.special_token_ids["bos"] = start
    writer_special.special_token_ids["sep"] = separator
    writer_special.add_special_token = {"bos": True, "eos": True, "sep": doubled}
