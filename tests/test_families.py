"""Model families: each built-in family recognised from its own published layout, overridden by name,
its instructions per task type and side, Matryoshka sizes, and the end token closing every text once.

The checkpoints are tiny random ones written by :mod:`qzhou_plugins.testing_families` in each family's
published layout; their vectors are compared with each family's reference in test_family_parity.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from tokenizers import Tokenizer, processors

from qzhou_plugins import Encoder, EncoderConfig, ModelLoadError, UnknownTaskError
from qzhou_plugins.backends.local.family_settings import close_with_end_token
from qzhou_plugins.families import ModelFamily, known_families
from qzhou_plugins.instructions import PromptStyle, family_records
from qzhou_plugins.testing import QWEN25_FIRST_SPECIAL_ID
from qzhou_plugins.testing_families import QWEN3_QUERY_PROMPT, build_qwen3_embedding_checkpoint

ENDOFTEXT_ID = QWEN25_FIRST_SPECIAL_ID
IM_START_ID, IM_END_ID = QWEN25_FIRST_SPECIAL_ID + 1, QWEN25_FIRST_SPECIAL_ID + 2
RETRIEVAL = "Given a web search query, retrieve relevant passages that answer the query"
TEXTS = ["hello world", "What is the boiling point of water at altitude?", "一只猫坐在垫子上。"]
LONG = " ".join(["Embedding models read every token of a long text before pooling it."] * 30)


@pytest.fixture(scope="module")
def checkpoints(
    tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer_dir: Path, family_checkpoints: dict[str, str]
) -> dict[str, str]:
    """The session's family checkpoints, and two Qwen3-Embedding variants: one whose folder's name
    says nothing (recognised by its last-token Pooling module), one with ``model.``-prefixed weights."""
    root = tmp_path_factory.mktemp("families")
    unnamed = build_qwen3_embedding_checkpoint(root, qwen_tokenizer_dir, name="tiny-last-token")
    prefixed = build_qwen3_embedding_checkpoint(
        root, qwen_tokenizer_dir, name="Qwen3-Embedding-prefixed", weight_prefix=True
    )
    return {**family_checkpoints, "qwen3-unnamed": str(unnamed), "qwen3-prefixed": str(prefixed)}


@pytest.fixture(scope="module")
def encoders(checkpoints: dict[str, str], tiny_qzhou: Encoder) -> dict[str, Encoder]:
    """Each checkpoint's encoder at its defaults (the process-wide shared ones)."""
    return {"qzhou": tiny_qzhou} | {name: Encoder.shared(model=path) for name, path in checkpoints.items()}


# -- recognition and override ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "pooling", "padding", "bidirectional"),
    [
        ("qzhou", "qzhou", "mean", "left", True),
        ("qwen3", "qwen3-embedding", "last", "left", False),
        ("qwen3-unnamed", "qwen3-embedding", "last", "left", False),  # Qwen3 + last-token Pooling module
        ("gte", "gte-qwen2", "last", "left", True),
        ("e5-mistral", "e5-mistral", "last", "left", False),
        ("bge", "bert", "cls", "right", False),
        ("e5", "bert", "mean", "right", False),
        ("nomic", "bert", "mean", "right", False),
    ],
)
def test_each_layout_is_recognised_as_its_family(
    encoders: dict[str, Encoder], name: str, family: str, pooling: str, padding: str, bidirectional: bool
) -> None:
    encoder = encoders[name]
    assert encoder.family == family
    assert encoder.facts.fingerprint["family"] == family
    assert encoder.pooling == pooling
    assert encoder.backend.loaded.padding_side == padding
    assert encoder.backend.loaded.bidirectional is bidirectional


def test_weights_with_or_without_the_causal_lm_prefix_load_alike(encoders: dict[str, Encoder]) -> None:
    """Qwen3-Embedding ships a base model's weight names under a ``Qwen3ForCausalLM`` config; a save
    of the causal LM prefixes them with ``model.``: both are the same weights to the loader."""
    np.testing.assert_allclose(
        encoders["qwen3"].encode_documents(TEXTS),
        encoders["qwen3-prefixed"].encode_documents(TEXTS),
        atol=1e-6,
    )


def test_a_named_family_overrides_the_recognised_one(
    checkpoints: dict[str, str], encoders: dict[str, Encoder]
) -> None:
    causal = Encoder(model=checkpoints["gte"], family="decoder")
    assert (causal.family, causal.backend.loaded.bidirectional) == ("decoder", False)
    assert causal.prefixes("sts") == (causal.prefixes()[0],) * 2  # the saved prompt, no task table
    cosines = np.sum(causal.encode_documents(TEXTS) * encoders["gte"].encode_documents(TEXTS), axis=1)
    assert cosines.max() < 0.99  # really another attention, not a relabelled one
    assert EncoderConfig(model=checkpoints["qwen3"], family="qwen3-embedding").family == "qwen3-embedding"


@pytest.mark.parametrize(("name", "family"), [("bge", "qwen3-embedding"), ("e5", "qzhou"), ("qwen3", "bert")])
def test_a_family_that_contradicts_the_checkpoint_is_refused(
    checkpoints: dict[str, str], name: str, family: str
) -> None:
    with pytest.raises(ModelLoadError, match=rf"family='{family}' is for (decoder|encoder) checkpoints"):
        Encoder(model=checkpoints[name], family=family)


def test_an_unknown_family_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError, match="unknown model family 'qwen4'") as raised:
        EncoderConfig(family="qwen4")
    for name in known_families():
        assert name in str(raised.value)


def test_a_template_without_its_instruction_field_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"must hold the field \{instruction\}"):
        PromptStyle(template="Instruct: \nQuery:")
    record = {**family_records()["qwen3-embedding"], "template": "Instruct: {task}\nQuery:"}
    with pytest.raises(ValidationError, match=r"\{instruction\}"):
        ModelFamily(name="broken", **record)


# -- instructions per family -------------------------------------------------------------------------


def instruct(instruction: str, space: str = "") -> str:
    return f"Instruct: {instruction}\nQuery:{space}"


@pytest.mark.parametrize(
    ("name", "task", "query", "document"),
    [
        ("qwen3", None, QWEN3_QUERY_PROMPT, ""),
        ("qwen3", "retrieval", instruct(RETRIEVAL), ""),
        (
            "qwen3",
            "sts",
            instruct("Retrieve semantically similar text"),
            instruct("Retrieve semantically similar text"),
        ),
        ("qwen3", "pair_classification", *[instruct("Retrieve semantically similar text")] * 2),
        ("qwen3", "bitext", *[instruct("Retrieve parallel sentences")] * 2),
        ("gte", None, instruct(RETRIEVAL, " "), ""),
        (
            "gte",
            "summarization",
            *[instruct("Given a news summary, retrieve other semantically similar summaries", " ")] * 2,
        ),
        ("e5-mistral", "sts", *[instruct("Retrieve semantically similar text.", " ")] * 2),
        ("e5-mistral", "retrieval", instruct(RETRIEVAL, " "), ""),
        (
            "qzhou",
            "FiQA2018",
            instruct("Given a financial question, retrieve user replies that best answer the question", " "),
            "",
        ),
        ("qzhou", "classification", *[instruct("Classify the given text into its category", " ")] * 2),
        ("bge", None, "Represent this sentence for searching relevant passages: ", ""),
        ("e5", None, "query: ", "passage: "),
        ("e5", "sts", "query: ", "query: "),  # E5's card: "query: " on both sides of a symmetric task
        ("nomic", None, "search_query: ", "search_document: "),
        ("nomic", "clustering", "clustering: ", "clustering: "),  # a saved prompt named after the task
        ("nomic", "classification", "classification: ", "classification: "),
    ],
)
def test_task_types_give_each_family_its_own_instructions(
    encoders: dict[str, Encoder], name: str, task: str | None, query: str, document: str
) -> None:
    assert encoders[name].prefixes(task) == (query, document)


@pytest.mark.parametrize(
    ("name", "task", "message"),
    [
        (
            "qwen3",
            "classification",
            "the qwen3-embedding family has no instruction for the task type 'classification'",
        ),
        ("qwen3", "clustering", "no instruction for the task type 'clustering'"),
        ("gte", "pair_classification", "the gte-qwen2 family has no instruction"),
        ("e5-mistral", "classification", "the e5-mistral family has no instruction"),
        ("qwen3", "FiQA2018", "the qwen3-embedding family publishes no per-task instructions"),
    ],
)
def test_a_task_a_family_publishes_nothing_for_is_refused(
    encoders: dict[str, Encoder], name: str, task: str, message: str
) -> None:
    with pytest.raises(UnknownTaskError, match=message) as raised:
        encoders[name].encode_queries(TEXTS, task=task)
    assert "pass the instruction itself" in str(raised.value)


def test_a_callers_instruction_goes_into_the_familys_template(encoders: dict[str, Encoder]) -> None:
    qwen3, gte, bge = encoders["qwen3"], encoders["gte"], encoders["bge"]
    own = "Given a claim, retrieve documents that support or refute it"
    assert qwen3.prefixes(query_instruction=own) == (instruct(own), "")
    assert qwen3.prefixes(own) == (instruct(own), "")  # a custom task sentence: the query side only
    assert qwen3.prefixes("sts", document_instruction="") == (
        instruct("Retrieve semantically similar text"),
        "",
    )
    assert gte.prefixes(query_instruction=own) == (instruct(own, " "), "")
    assert bge.prefixes(query_instruction="Represent: ") == ("Represent: ", "")  # a literal prefix
    np.testing.assert_allclose(
        qwen3.encode(TEXTS, instruction=own), qwen3.encode_with_prefix(TEXTS, instruct(own)), atol=1e-6
    )


# -- Matryoshka --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen3_reference(checkpoints: dict[str, str]) -> object:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(checkpoints["qwen3"], device="cpu")


@pytest.mark.parametrize("dimensions", [32, 48])
def test_qwen3_dimensions_are_the_full_vector_cut_and_renormalised(
    checkpoints: dict[str, str], encoders: dict[str, Encoder], qwen3_reference: Any, dimensions: int
) -> None:
    short = Encoder(model=checkpoints["qwen3"], dimensions=dimensions)
    assert short.dimension == dimensions and short.facts.fingerprint["dimensions"] == str(dimensions)
    ours = short.encode_queries([*TEXTS, LONG])
    full = encoders["qwen3"].encode_queries([*TEXTS, LONG])[:, :dimensions]
    np.testing.assert_allclose(ours, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-6)
    theirs = qwen3_reference.encode_query([*TEXTS, LONG], normalize_embeddings=True, truncate_dim=dimensions)
    assert theirs.shape == ours.shape
    assert np.sum(ours * theirs, axis=1).min() >= 0.99999


@pytest.mark.parametrize(("name", "dimensions", "message"), [
    ("qwen3", 16, r"dimensions=16 is outside the sizes .* from 32 to 64 \(qwen3-embedding family\)"),
    ("qwen3", 65, r"dimensions=65 is outside the sizes .* from 32 to 64"),
    ("qzhou", 32, "the qzhou family was not trained to be cut short"),
    ("bge", 128, "the bert family was not trained to be cut short"),
])  # fmt: skip
def test_dimensions_a_family_was_not_trained_for_are_refused(
    checkpoints: dict[str, str], tiny_qzhou_path: str, name: str, dimensions: int, message: str
) -> None:
    model = tiny_qzhou_path if name == "qzhou" else checkpoints[name]
    with pytest.raises(ValueError, match=message):
        Encoder(model=model, dimensions=dimensions)


# -- the end token -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "first", "end"),
    [("qwen3", None, ENDOFTEXT_ID), ("gte", None, ENDOFTEXT_ID), ("e5-mistral", IM_START_ID, ENDOFTEXT_ID)],
)
def test_the_end_token_closes_every_text_exactly_once(
    checkpoints: dict[str, str], encoders: dict[str, Encoder], name: str, first: int | None, end: int
) -> None:
    """Qwen3's tokenizer appends ``<|endoftext|>`` itself while its eos is ``<|im_end|>`` (nothing more
    may be appended); gte-Qwen2's appends its eos; E5-Mistral's puts a begin token first and appends
    nothing (we append the eos, after the text, not after the begin token). A text cut by truncation
    keeps its end token."""
    for ids in encoders[name].backend.tokenize([*TEXTS, LONG]):
        assert ids[-1] == end and ids.count(end) == 1 and IM_END_ID not in ids
        assert (ids[0] == first) if first is not None else (ids[0] not in (IM_START_ID, end))
    cut = Encoder(model=checkpoints[name], max_length=8).backend.tokenize([LONG])[0]
    assert len(cut) == 8 and cut[-1] == end and cut.count(end) == 1
    assert (cut[0] == first) if first is not None else True


@pytest.fixture(scope="module")
def qwen_tokenizer(qwen_tokenizer_dir: Path) -> Tokenizer:
    """The Qwen vocabulary as a bare tokenizer, read once (each test sets its post-processor)."""
    return Tokenizer.from_file(str(qwen_tokenizer_dir / "tokenizer.json"))


def bare_tokenizer(tokenizer: Tokenizer, post_processor: object) -> Tokenizer:
    tokenizer.no_truncation()
    tokenizer.post_processor = post_processor  # type: ignore[assignment]
    return tokenizer


BEGIN = processors.TemplateProcessing(
    single="<|im_start|> $A", special_tokens=[("<|im_start|>", IM_START_ID)]
)
CLOSING = processors.TemplateProcessing(
    single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", ENDOFTEXT_ID)]
)


@pytest.mark.parametrize(
    ("kind", "post_processor", "expected"),
    [
        ("none", None, ["hello", "<|endoftext|>"]),
        ("byte-level", processors.ByteLevel(trim_offsets=False), ["hello", "<|endoftext|>"]),
        ("begin token", BEGIN, ["<|im_start|>", "hello", "<|endoftext|>"]),
        ("already closed", CLOSING, ["hello", "<|endoftext|>"]),
        (
            "begin token after byte-level",
            processors.Sequence([processors.ByteLevel(trim_offsets=False), BEGIN]),
            ["<|im_start|>", "hello", "<|endoftext|>"],
        ),
    ],
)
def test_close_with_end_token_appends_once_whatever_the_post_processor(
    qwen_tokenizer: Tokenizer, kind: str, post_processor: object, expected: list[str]
) -> None:
    tokenizer = bare_tokenizer(qwen_tokenizer, post_processor)
    close_with_end_token(tokenizer, "<|endoftext|>", "tiny")
    assert tokenizer.encode("hello").tokens == expected, kind
    tokenizer.enable_truncation(4)
    cut = tokenizer.encode(LONG).tokens
    assert len(cut) == 4 and cut[-1] == "<|endoftext|>" and cut.count("<|endoftext|>") == 1


def test_close_with_end_token_refuses_a_tokenizer_without_one(qwen_tokenizer: Tokenizer) -> None:
    with pytest.raises(ModelLoadError, match="has no end \\(eos\\) token"):
        close_with_end_token(bare_tokenizer(qwen_tokenizer, None), None, "tiny")
    with pytest.raises(ModelLoadError, match="has no end \\(eos\\) token"):
        close_with_end_token(bare_tokenizer(qwen_tokenizer, None), "<|no such token|>", "tiny")


@pytest.mark.parametrize(
    ("pooling", "refused"),
    [
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, "pooling_mode_mean_tokens"),
        ({"pooling_mode_weightedmean_tokens": True}, "pooling_mode_weightedmean_tokens"),
        ({"pooling_mode": "mean_sqrt_len_tokens"}, "mean_sqrt_len_tokens"),
        ({"pooling_mode_mean_tokens": True, "include_prompt": False}, "include_prompt"),
    ],
    ids=["two-modes", "weighted-mean", "sqrt-len", "prompt-left-out"],
)
def test_a_pooling_module_not_computed_here_is_refused(
    minilm_path: str, tmp_path: Path, pooling: dict[str, Any], refused: str
) -> None:
    """A Pooling module read as its nearest mode would give other vectors than sentence-transformers'
    with no error: it is refused, naming what it asks for."""
    import json
    import shutil

    folder = Path(shutil.copytree(minilm_path, tmp_path / "minilm"))
    settings = {"word_embedding_dimension": 384, **pooling}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(settings))
    with pytest.raises(ModelLoadError, match=refused):
        Encoder(model=str(folder))
