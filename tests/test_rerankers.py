"""The reranker seam's core: parity with sentence-transformers, the Qwen3-Reranker template token by
token, kind detection, bad input and the guarantees (one copy of the weights, threads, equal pairs,
truncation warnings, out-of-memory splitting, no NaN, device and dtype).

The checkpoints are tiny and random, saved with real vocabularies (MiniLM's WordPiece, Qwen's BPE),
so that every path runs as it does on a real reranker; sentence-transformers' ``CrossEncoder`` is the
reference for both kinds (its ``LogitScore`` path runs causal-LM rerankers).
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from qzhou_plugins import Encoder
from qzhou_plugins.backends.base import EncoderOutOfMemoryError, ModelLoadError
from qzhou_plugins.backends.local import registry
from qzhou_plugins.config import LlmTemplate, RerankerConfig
from qzhou_plugins.rerank import rerank, score_candidates
from qzhou_plugins.rerank.formats import QWEN3_RERANKER
from qzhou_plugins.rerank.reranker import Reranker, detect_kind

QUERIES = ["what is a cat", "how do planes stay in the air over the ocean at night", "猫是什么动物"]
CANDIDATES = [
    "a cat is a small domesticated carnivorous mammal",
    "planes fly because their wings push air down " * 6,
    "nothing",
    "猫是一种小型食肉哺乳动物",
    "tides and moons",
]
PAIRS = [(q, d) for q in QUERIES for d in CANDIDATES]
"""Several queries x candidates of mixed lengths (and scripts), scored in one call."""

# The Qwen3-Reranker model card's strings, written out here (not imported) so that the template the
# package holds as data is checked against the card, not against itself.
CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

TOLERANCE = 1e-5


def split(pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    return [q for q, _ in pairs], [d for _, d in pairs]


def card_texts(pairs: list[tuple[str, str]], instruction: str = CARD_INSTRUCTION) -> list[str]:
    """The model card's ``format_instruction`` of each pair."""
    return [f"<Instruct>: {instruction}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]


def card_ids(tokenizer: Any, pairs: list[tuple[str, str]], max_length: int, **kwargs: Any) -> list[list[int]]:
    """The model card's ``process_inputs``: prefix and suffix tokenised apart, the body truncated to
    ``max_length - len(prefix) - len(suffix)`` tokens."""
    prefix = tokenizer.encode(CARD_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(CARD_SUFFIX, add_special_tokens=False)
    bodies = tokenizer(
        card_texts(pairs, **kwargs),
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=max_length - len(prefix) - len(suffix),
    )["input_ids"]
    return [prefix + ids + suffix for ids in bodies]


def causal_lm_margin(
    reranker: Reranker, rows: list[list[int]], yes: str = "yes", no: str = "no"
) -> np.ndarray:
    """The model card's score of each row of ids, one row at a time, by the transformers model itself
    (the whole vocabulary's logits at the last position, no padding): sigmoid(logit(yes) - logit(no))."""
    model, tokenizer = reranker.backend.loaded.module, reranker.backend.loaded.tokenizer
    yes_id, no_id = tokenizer.convert_tokens_to_ids(yes), tokenizer.convert_tokens_to_ids(no)
    with torch.inference_mode():
        margins = [model(input_ids=torch.tensor([row])).logits[0, -1].float() for row in rows]
    return np.array([torch.sigmoid(m[yes_id] - m[no_id]).item() for m in margins], dtype=np.float32)


# -- checkpoints ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rerankers")


@pytest.fixture(scope="module")
def identity_path(folders: Path, minilm_path: str) -> str:
    """A BERT cross-encoder whose config.json saves the Identity activation: scores are logits."""
    from qzhou_plugins.testing import build_cross_encoder_checkpoint

    return str(
        build_cross_encoder_checkpoint(
            folders / "identity", minilm_path, activation="torch.nn.modules.linear.Identity", seed=1
        )
    )


@pytest.fixture(scope="module")
def two_label_path(folders: Path, minilm_path: str) -> str:
    from qzhou_plugins.testing import build_cross_encoder_checkpoint

    return str(build_cross_encoder_checkpoint(folders / "two-labels", minilm_path, num_labels=2, seed=2))


@pytest.fixture(scope="module")
def xlmr_path(folders: Path, minilm_path: str) -> str:
    from qzhou_plugins.testing import build_xlmr_cross_encoder_checkpoint

    return str(build_xlmr_cross_encoder_checkpoint(folders / "xlmr", minilm_path))


@pytest.fixture(scope="module")
def modernbert_path(folders: Path, xlmr_path: str) -> str:
    """A random ``ModernBertForSequenceClassification`` (gte-reranker-modernbert's architecture) with
    the XLM-R-style tokenizer (RoBERTa pair layout, no segment ids)."""
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(xlmr_path)
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        initializer_range=0.2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        architectures=["ModernBertForSequenceClassification"],
    )
    torch.manual_seed(4)
    out = folders / "modernbert"
    ModernBertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def decoder_cross_encoder_path(folders: Path, xlmr_path: str) -> str:
    """A random ``Qwen3ForSequenceClassification`` (a decoder cross-encoder, as the converted
    Qwen3-Reranker "seq-cls" checkpoints are) that saved no pad token id."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(xlmr_path)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        initializer_range=0.3,
        num_labels=1,
        pad_token_id=None,
        architectures=["Qwen3ForSequenceClassification"],
    )
    torch.manual_seed(5)
    out = folders / "decoder-cross-encoder"
    Qwen3ForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def base_lm_path(folders: Path, xlmr_path: str) -> str:
    """A base causal LM (``LlamaForCausalLM``; the WordPiece vocabulary of the XLM-R-style tokenizer,
    in which "yes" and "no" are tokens): a family with no reranker template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(xlmr_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        initializer_range=0.3,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(3)
    out = folders / "base-lm"
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder_path: str) -> Reranker:
    return Reranker.shared(model=tiny_cross_encoder_path, device="cpu")


@pytest.fixture(scope="module")
def llm(tiny_llm_reranker_path: str) -> Reranker:
    return Reranker.shared(model=tiny_llm_reranker_path, device="cpu")


@pytest.fixture(scope="module")
def short_llm(tiny_llm_reranker_path: str) -> Reranker:
    """The LLM reranker at max_length=120: its template leaves about 70 tokens for the pair."""
    return Reranker(device="cpu", model=tiny_llm_reranker_path, max_length=120)


@pytest.fixture(scope="module")
def st_llm(tiny_llm_reranker_path: str) -> Any:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(tiny_llm_reranker_path, device="cpu")


# -- 1. parity with sentence-transformers' CrossEncoder ----------------------------------------------


@pytest.mark.parametrize("which", ["bert", "identity", "xlmr", "modernbert"])
def test_cross_encoders_score_as_sentence_transformers(
    which: str, tiny_cross_encoder_path: str, identity_path: str, xlmr_path: str, modernbert_path: str
) -> None:
    from sentence_transformers import CrossEncoder

    paths = {"bert": tiny_cross_encoder_path, "identity": identity_path, "xlmr": xlmr_path}
    path = paths.get(which) or modernbert_path
    reference = CrossEncoder(path, max_length=48, device="cpu").predict(PAIRS, batch_size=4)
    reranker = Reranker(device="cpu", model=path, max_length=48)
    ours = reranker.score_pairs(*split(PAIRS))
    assert reranker.kind == "cross-encoder"
    assert reranker.score_scale == ("logit" if which == "identity" else "probability")
    assert ours.dtype == np.float32 and ours.shape == (len(PAIRS),)
    np.testing.assert_allclose(ours, reference, atol=TOLERANCE)
    assert np.ptp(ours) > 0.05  # the pairs are told apart: equal scores would prove nothing
    if which == "identity":
        assert (ours < 0).any() or (ours > 1).any()  # logits, not probabilities


def test_activation_saved_by_sentence_transformers_6_is_read(
    tiny_cross_encoder_path: str, folders: Path
) -> None:
    """sentence-transformers 6 saves the activation in config_sentence_transformers.json."""
    from sentence_transformers import CrossEncoder

    saved = folders / "st-identity"
    CrossEncoder(tiny_cross_encoder_path, activation_fn=torch.nn.Identity(), device="cpu").save(str(saved))
    reference = CrossEncoder(str(saved), device="cpu").predict(PAIRS[:5])
    reranker = Reranker(device="cpu", model=str(saved))
    assert reranker.kind == "cross-encoder" and reranker.score_scale == "logit"
    np.testing.assert_allclose(reranker.score_pairs(*split(PAIRS[:5])), reference, atol=TOLERANCE)


def test_a_decoder_cross_encoder_without_a_pad_id_scores_batches(decoder_cross_encoder_path: str) -> None:
    """transformers refuses a batch of two for such a checkpoint (so does sentence-transformers); the
    scores of a batch are those of each pair alone."""
    from transformers import AutoTokenizer

    reranker = Reranker(device="cpu", model=decoder_cross_encoder_path)
    assert reranker.kind == "cross-encoder" and reranker.backend.loaded.padding_side == "left"
    ours = reranker.score_pairs(*split(PAIRS))
    tokenizer = AutoTokenizer.from_pretrained(decoder_cross_encoder_path)
    with torch.inference_mode():
        alone = [
            torch.sigmoid(reranker.backend.loaded.module(**tokenizer(q, d, return_tensors="pt")).logits[0, 0])
            for q, d in PAIRS
        ]
    np.testing.assert_allclose(ours, np.array([float(score) for score in alone]), atol=TOLERANCE)
    assert np.ptp(ours) > 0.05


def st_pair(query: str, document: str, instruction: str = CARD_INSTRUCTION) -> tuple[str, str]:
    """One pair as sentence-transformers' causal-LM CrossEncoder must get it to see the model card's
    text: it concatenates a pair's two token sequences, so the template goes into the texts."""
    return (
        f"{CARD_PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n",
        f"<Document>: {document}{CARD_SUFFIX}",
    )


def test_llm_reranker_scores_as_sentence_transformers_logit_score(llm: Reranker, st_llm: Any) -> None:
    st_pairs = [st_pair(q, d) for q, d in PAIRS]
    features = st_llm[0].preprocess(st_pairs)
    rows = zip(features["input_ids"], features["attention_mask"], strict=True)
    seen = [row[mask.bool()].tolist() for row, mask in rows]
    assert seen == llm.backend._llm_tokens(*split(PAIRS), None)  # the same tokens, so a fair comparison
    # predict applies the CrossEncoder's default Sigmoid on LogitScore's logit(yes) - logit(no).
    logits = st_llm.predict(st_pairs, batch_size=4, activation_fn=torch.nn.Identity())
    ours = llm.score_pairs(*split(PAIRS))
    assert llm.kind == "llm" and llm.score_scale == "probability"
    np.testing.assert_allclose(ours, 1 / (1 + np.exp(-logits)), atol=TOLERANCE)
    assert np.ptp(ours) > 0.05


def test_llm_reranker_saved_by_sentence_transformers_is_an_llm_reranker(st_llm: Any, folders: Path) -> None:
    """A causal-LM CrossEncoder saved by sentence-transformers has a modules.json like an embedder's."""
    saved = folders / "st-llm"
    st_llm.save(str(saved))
    assert detect_kind(RerankerConfig(model=str(saved))) == "llm"


# -- 2. the Qwen3-Reranker template, token by token ---------------------------------------------------


def test_qwen3_template_is_the_model_cards(llm: Reranker) -> None:
    assert (QWEN3_RERANKER.prefix, QWEN3_RERANKER.suffix) == (CARD_PREFIX, CARD_SUFFIX)
    assert QWEN3_RERANKER.default_instruction == CARD_INSTRUCTION
    tokenizer = llm.backend.loaded.tokenizer
    assert llm.backend._llm_tokens(*split(PAIRS), None) == card_ids(tokenizer, PAIRS, llm.facts.max_length)
    custom = "Given a question, find the passage in Chinese that answers it"
    ours = llm.backend._llm_tokens(*split(PAIRS), custom)
    assert ours == card_ids(tokenizer, PAIRS, llm.facts.max_length, instruction=custom)
    # The instruction reaches the model through the public call: a different prompt, other scores.
    with_custom = score_candidates(llm, QUERIES[0], CANDIDATES, instruction=custom)
    np.testing.assert_allclose(with_custom, causal_lm_margin(llm, ours[:5]), atol=TOLERANCE)
    assert not np.allclose(with_custom, score_candidates(llm, QUERIES[0], CANDIDATES), atol=1e-4)


def test_qwen3_template_truncates_the_body_as_the_model_card(
    short_llm: Reranker, caplog: pytest.LogCaptureFixture
) -> None:
    short = short_llm
    tokenizer = short.backend.loaded.tokenizer
    expected = card_ids(tokenizer, PAIRS, 120)
    with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
        ids = short.backend._llm_tokens(*split(PAIRS), None)
    assert ids == expected
    assert max(len(row) for row in ids) == 120 and ids[0][-len(tokenizer.encode(CARD_SUFFIX)) :] == (
        tokenizer.encode(CARD_SUFFIX)
    )
    cut = sum(1 for row in expected if len(row) == 120)
    assert 0 < cut < len(PAIRS)
    assert f"{cut} of {len(PAIRS)} candidates were longer than 120 tokens" in caplog.text
    np.testing.assert_allclose(
        short.score_pairs(*split(PAIRS[:5])), causal_lm_margin(short, expected[:5]), atol=TOLERANCE
    )


def test_llm_task_instruction_and_template_default(llm: Reranker) -> None:
    """No instruction: the template's default for retrieval and reranking, the task's for others."""
    default = score_candidates(llm, QUERIES[0], CANDIDATES)
    np.testing.assert_allclose(score_candidates(llm, QUERIES[0], CANDIDATES, task="retrieval"), default)
    sts = score_candidates(llm, QUERIES[0], CANDIDATES, task="sts")
    sts_as_instruction = score_candidates(
        llm, QUERIES[0], CANDIDATES, instruction="Retrieve semantically similar text"
    )
    np.testing.assert_allclose(sts, sts_as_instruction, atol=TOLERANCE)
    assert not np.allclose(sts, default, atol=1e-4)


# -- 3. kind detection ----------------------------------------------------------------------------------


def test_kinds_are_read_from_the_checkpoints(
    tiny_cross_encoder_path: str,
    xlmr_path: str,
    tiny_llm_reranker_path: str,
    minilm_path: str,
    tiny_qzhou_path: str,
) -> None:
    expected = {
        tiny_cross_encoder_path: "cross-encoder",
        xlmr_path: "cross-encoder",
        tiny_llm_reranker_path: "llm",
        minilm_path: "embedding",
        tiny_qzhou_path: "embedding",
    }
    assert {path: detect_kind(RerankerConfig(model=path)) for path in expected} == expected


@pytest.mark.parametrize("which", ["minilm", "qzhou"])
def test_embedding_reranker_is_the_shared_encoders_cosine(
    which: str, minilm_path: str, tiny_qzhou_path: str
) -> None:
    path = {"minilm": minilm_path, "qzhou": tiny_qzhou_path}[which]
    reranker = Reranker.shared(model=path)
    assert reranker.kind == "embedding" and reranker.score_scale == "cosine" and reranker.lowest_score == -1.0
    assert reranker.encoder is Encoder.shared(model=path)
    assert Reranker(model=path).encoder is Encoder.shared(model=path)
    assert Reranker.of_encoder(Encoder.shared(model=path)).encoder is Encoder.shared(model=path)
    for instruction in (None, "Given a question, retrieve the answer"):
        ours = score_candidates(reranker, QUERIES[0], CANDIDATES, instruction=instruction)
        theirs = score_candidates(Encoder.shared(model=path), QUERIES[0], CANDIDATES, instruction=instruction)
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_a_cross_encoder_is_not_an_embedder(tiny_cross_encoder_path: str) -> None:
    """kind='embedding' on a cross-encoder is refused: its classification head would be dropped and
    its pooled vectors were never trained to be compared."""
    with pytest.raises(ModelLoadError, match=r"BertForSequenceClassification.*cross-encoder"):
        Reranker(device="cpu", model=tiny_cross_encoder_path, kind="embedding")


def test_an_embedder_is_not_a_cross_encoder_nor_an_llm_reranker(minilm_path: str) -> None:
    with pytest.raises(ModelLoadError, match=r"is BertModel \(bert\), not a cross-encoder"):
        Reranker(device="cpu", model=minilm_path, kind="cross-encoder")
    with pytest.raises(ModelLoadError, match=r"is BertModel \(bert\), not an LLM reranker"):
        Reranker(device="cpu", model=minilm_path, kind="llm")


def test_a_base_causal_lm_needs_a_template(base_lm_path: str) -> None:
    with pytest.raises(ModelLoadError, match=r"causal language model, LlamaForCausalLM \(llama\).*template="):
        Reranker(device="cpu", model=base_lm_path)
    with pytest.raises(ModelLoadError, match=r"LlamaForCausalLM \(llama\), not an LLM reranker"):
        Reranker(device="cpu", model=base_lm_path, kind="llm")


def test_a_custom_template_makes_a_causal_lm_an_llm_reranker(base_lm_path: str) -> None:
    template = LlmTemplate(
        prefix="Is the passage relevant to the question?\n",
        body="Question: {query}\nPassage: {document}",
        suffix="\nAnswer:",
        yes_token="yes",
        no_token="no",
        default_instruction="",
    )
    reranker = Reranker(device="cpu", model=base_lm_path, template=template)
    assert reranker.kind == "llm"
    tokenizer = reranker.backend.loaded.tokenizer
    rows = [
        tokenizer.encode(template.prefix, add_special_tokens=False)
        + tokenizer.encode(
            template.body.format(instruction="", query=q, document=d), add_special_tokens=False
        )
        + tokenizer.encode(template.suffix, add_special_tokens=False)
        for q, d in PAIRS[:5]
    ]
    np.testing.assert_allclose(
        reranker.score_pairs(*split(PAIRS[:5])), causal_lm_margin(reranker, rows), atol=TOLERANCE
    )
    absent = template.model_copy(update={"yes_token": "<|yes|>", "no_token": "<|no|>"})
    with pytest.raises(ModelLoadError, match=r"no single token '<\|yes\|>' in its vocabulary"):
        Reranker(device="cpu", model=base_lm_path, template=absent)


# -- 4. bad input ---------------------------------------------------------------------------------------


def test_a_query_longer_than_max_length_is_named(cross_encoder: Reranker, short_llm: Reranker) -> None:
    long_query = "tides and moons " * 300
    with pytest.raises(
        ValueError,
        match=r"query alone takes \d+ tokens and max_length=512 .*after its 3 special.*begins 'tides and",
    ):
        score_candidates(cross_encoder, long_query, ["a", "b"])
    with pytest.raises(
        ValueError,
        match=r"the query alone takes \d+ tokens and max_length=120 .*template.*begins 'tides and moons",
    ):
        score_candidates(short_llm, "tides and moons " * 20, ["a"])
    with pytest.raises(ValueError, match=r"max_length=40 leaves no room .*template's prefix and suffix take"):
        Reranker(device="cpu", model=short_llm.config.model, max_length=40)
    with pytest.raises(ValueError, match=r"max_length=4 leaves no room .*special tokens of a pair take 3"):
        Reranker(device="cpu", model=cross_encoder.config.model, max_length=4)


def test_no_candidates_and_ten_thousand(cross_encoder: Reranker) -> None:
    empty = score_candidates(cross_encoder, "q", [])
    assert empty.shape == (0,) and empty.dtype == np.float32
    assert rerank(cross_encoder, "q", []) == []
    many = [f"document number {i}" for i in range(10_000)]
    scores = score_candidates(cross_encoder, "which document", many)
    assert scores.shape == (10_000,) and np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()
    for i in (0, 4_321, 9_999):
        np.testing.assert_allclose(
            scores[i], score_candidates(cross_encoder, "which document", [many[i]])[0], atol=TOLERANCE
        )


def test_blank_and_missing_candidates(cross_encoder: Reranker, identity_path: str) -> None:
    candidates = ["a cat", "  ", None, "a dog"]
    with pytest.raises(TypeError, match=r"None at position\(s\) 2"):
        score_candidates(cross_encoder, "cats", candidates)
    with pytest.raises(ValueError, match=r"empty or whitespace-only: position\(s\) 1"):
        score_candidates(cross_encoder, "cats", ["a cat", "  "])
    scores = score_candidates(cross_encoder, "cats", candidates, empty="lowest")
    assert scores[1] == scores[2] == 0.0 == cross_encoder.lowest_score
    np.testing.assert_allclose(scores[[0, 3]], score_candidates(cross_encoder, "cats", ["a cat", "a dog"]))
    logits = Reranker(device="cpu", model=identity_path)
    assert score_candidates(logits, "cats", candidates, empty="lowest")[2] == logits.lowest_score < -1e20
    assert [c.index for c in rerank(cross_encoder, "cats", candidates, empty="lowest")][-2:] == [1, 2]


def test_several_labels_need_one_named(two_label_path: str) -> None:
    from sentence_transformers import CrossEncoder

    with pytest.raises(ModelLoadError, match=r"2 labels \(LABEL_0, LABEL_1\).*label="):
        Reranker(device="cpu", model=two_label_path)
    reference = CrossEncoder(two_label_path, device="cpu").predict(PAIRS[:5])
    first = None
    for label, column in ((1, 1), ("LABEL_1", 1), (0, 0), ("LABEL_0", 0)):
        reranker = Reranker(device="cpu", model=two_label_path, label=label)
        assert reranker.score_scale == "logit"  # sentence-transformers' Identity for several labels
        np.testing.assert_allclose(
            reranker.score_pairs(*split(PAIRS[:5])), reference[:, column], atol=TOLERANCE
        )
        first = first or reranker
        assert reranker.backend.loaded is first.backend.loaded  # each its own label, one copy of the weights
    with pytest.raises(ModelLoadError, match="label=2 is out of range"):
        Reranker(device="cpu", model=two_label_path, label=2)
    with pytest.raises(ModelLoadError, match="label='relevant' is not a label"):
        Reranker(device="cpu", model=two_label_path, label="relevant")


def test_options_of_another_kind_are_refused(
    tiny_cross_encoder_path: str, tiny_llm_reranker_path: str, cross_encoder: Reranker
) -> None:
    with pytest.raises(ValueError, match=r"template mean\(s\) nothing to a reranker of kind 'cross-encoder'"):
        Reranker(device="cpu", model=tiny_cross_encoder_path, template=QWEN3_RERANKER)
    with pytest.raises(ValueError, match=r"label mean\(s\) nothing to a reranker of kind 'llm'"):
        Reranker(device="cpu", model=tiny_llm_reranker_path, label=1)
    with pytest.raises(ValueError, match=r"activation mean\(s\) nothing to a reranker of kind 'llm'"):
        Reranker(device="cpu", model=tiny_llm_reranker_path, activation="identity")
    with pytest.raises(ValueError, match="is a cross-encoder: it takes no instruction"):
        score_candidates(cross_encoder, "cats", ["a cat"], instruction="Given a question, find answers")


# -- 5. guarantees ------------------------------------------------------------------------------------


def test_one_copy_of_the_weights(
    tiny_cross_encoder_path: str, cross_encoder: Reranker, llm: Reranker, short_llm: Reranker
) -> None:
    assert Reranker.shared(model=tiny_cross_encoder_path, device="cpu") is cross_encoder
    loaded = len(registry.loaded_models())
    others = [
        Reranker(device="cpu", model=tiny_cross_encoder_path),
        Reranker(device="cpu", model=tiny_cross_encoder_path, max_length=64, batch_tokens=512),
        Reranker({"model": tiny_cross_encoder_path, "kind": "cross-encoder", "device": "cpu"}),
    ]
    assert all(other.backend.loaded is cross_encoder.backend.loaded for other in others)
    assert short_llm.backend.loaded is llm.backend.loaded  # another max_length, the same weights
    assert len(registry.loaded_models()) == loaded


@pytest.mark.parametrize("which", ["cross_encoder", "llm"])
def test_threads_get_the_scores_of_one_caller(which: str, request: pytest.FixtureRequest) -> None:
    reranker: Reranker = request.getfixturevalue(which)
    sequential = [score_candidates(reranker, query, CANDIDATES) for query in QUERIES]
    with ThreadPoolExecutor(max_workers=len(QUERIES)) as pool:
        threaded = list(pool.map(lambda query: score_candidates(reranker, query, CANDIDATES), QUERIES * 2))
    for expected, got in zip(sequential * 2, threaded, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("which", ["cross_encoder", "llm"])
def test_equal_pairs_get_equal_scores(which: str, request: pytest.FixtureRequest) -> None:
    reranker: Reranker = request.getfixturevalue(which)
    candidates = [CANDIDATES[1], CANDIDATES[0], CANDIDATES[1], CANDIDATES[4], CANDIDATES[0], CANDIDATES[1]]
    scores = score_candidates(reranker, QUERIES[1], candidates)
    assert scores[0] == scores[2] == scores[5] and scores[1] == scores[4]
    assert scores[0] != scores[1]


def test_truncation_warning_counts_the_candidates_cut(
    tiny_cross_encoder_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    reranker = Reranker(device="cpu", model=tiny_cross_encoder_path, max_length=24)
    candidates = ["short one", "tides and moons " * 10, "tiny", "words " * 40, "another long one " * 9]
    with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
        score_candidates(reranker, "a query", candidates)
    assert "3 of 5 candidates were longer than 24 tokens" in caplog.text
    assert "the query is kept whole" in caplog.text


@pytest.mark.parametrize("which", ["cross_encoder", "llm"])
def test_out_of_memory_splits_the_batch(
    which: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No GPU here: the backend's forward is made to run out of memory on any batch of two or more."""
    reranker: Reranker = request.getfixturevalue(which)
    expected = score_candidates(reranker, QUERIES[1], CANDIDATES)
    # The pass that takes a batch: a cross-encoder's forward, an LLM reranker's candidate tails
    # (its shared tokens are one sequence, computed before them).
    method = "_tail_scores" if which == "llm" else "_forward"
    forward = getattr(reranker.backend, method)

    def small_memory(*args: Any) -> np.ndarray:
        if len(args[-1] if which == "llm" else args[0]) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(*args)

    monkeypatch.setattr(reranker.backend, method, small_memory)
    with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
        got = score_candidates(reranker, QUERIES[1], CANDIDATES)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    assert "Out of memory on a batch of 5 pairs" in caplog.text

    def no_memory(*args: Any) -> np.ndarray:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(reranker.backend, method, no_memory)
    with pytest.raises(EncoderOutOfMemoryError, match=r"a single pair of \d+ tokens does not fit"):
        score_candidates(reranker, QUERIES[1], CANDIDATES[:1])


def test_a_nan_score_is_an_error(cross_encoder: Reranker, monkeypatch: pytest.MonkeyPatch) -> None:
    reranker = cross_encoder

    def broken(batch: list[list[int]], segments: Any) -> np.ndarray:
        return np.full(len(batch), math.nan, dtype=np.float32)

    monkeypatch.setattr(reranker.backend, "_forward", broken)
    with pytest.raises(FloatingPointError, match="no finite score"):
        score_candidates(reranker, "cats", ["a cat", "a dog"])
    with pytest.raises(FloatingPointError, match="no finite score"):
        reranker.score_pairs(["cats"], ["a cat"])  # the seam itself, as the server calls it


def test_device_and_dtype_are_chosen_automatically(
    tiny_cross_encoder_path: str, tiny_llm_reranker_path: str
) -> None:
    cuda = torch.cuda.is_available()
    expected = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    for path in (tiny_cross_encoder_path, tiny_llm_reranker_path):
        reranker = Reranker.shared(model=path)
        assert reranker.backend.device.type == ("cuda" if cuda else "cpu")
        assert reranker.backend.dtype == expected
        assert reranker.facts.fingerprint["dtype"] == str(expected).removeprefix("torch.")
        assert reranker.facts.fingerprint["kind"] == reranker.kind


def test_the_shared_tokens_of_a_query_are_its_pairs_common_prefix() -> None:
    from qzhou_plugins.backends.local.prefix_sharing import by_query, shared_length

    assert shared_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_length([[7, 8, 9]]) == 2  # one pair keeps its last token to compute
    assert shared_length([[1, 2], [1, 2, 3]]) == 1  # never a whole row: each has a token left
    assert shared_length([[4, 5], [6, 5]]) == 0
    assert by_query(["a", "b", "a", "c", "b"]) == [[0, 2], [1, 4], [3]]
