"""Both framework adapters take the same options and refuse the same bad input, through the core.

Each defect a new user hit through LangChain or LlamaIndex is checked here through both adapters
where it applies: the option set (every EncoderConfig field, ``encoder=``), generators, lone strings,
None and numbers where a list of texts belongs, non-string and blank instructions, invisible text,
lone surrogates, and the rerankers' ``top_n`` and threshold. On all-MiniLM-L6-v2 (one shared copy
of the weights for the whole module), where a custom instruction is a literal prefix.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode
from pydantic import ValidationError

from qzhou_plugins import DEMO_MODEL, Encoder, EncoderConfig
from qzhou_plugins.langchain import QZhouEmbeddings, QZhouReranker
from qzhou_plugins.llama_index import QZhouEmbedding, QZhouRerank
from qzhou_plugins.rerank import rank, score_candidates

TEXTS = ["Green tea steeps at 80 degrees.", "Black tea takes boiling water.", "Store tea in the dark."]
QUERY = "How hot should the water be?"
INVISIBLE = ["\u200b\u200b", "\ufeff", "\x00", "\u200d \u2060"]
EMBEDDERS = (QZhouEmbeddings, QZhouEmbedding)
RERANKERS = (QZhouReranker, QZhouRerank)


@pytest.fixture(scope="module")
def encoder(minilm: Encoder) -> Encoder:
    return minilm


@pytest.fixture(scope="module")
def langchain(encoder: Encoder) -> QZhouEmbeddings:
    return QZhouEmbeddings(encoder=encoder)


@pytest.fixture(scope="module")
def llama(encoder: Encoder) -> QZhouEmbedding:
    return QZhouEmbedding(encoder=encoder)


def document_methods(langchain: QZhouEmbeddings, llama: QZhouEmbedding) -> dict[str, Callable[[Any], Any]]:
    """Every public method of both adapters that embeds a list of document-side texts."""
    return {
        "embed_documents": langchain.embed_documents,
        "get_text_embedding_batch": llama.get_text_embedding_batch,
    }


def query_methods(langchain: QZhouEmbeddings, llama: QZhouEmbedding) -> dict[str, Callable[[Any], Any]]:
    return {"embed_query": langchain.embed_query, "get_query_embedding": llama.get_query_embedding}


# -- one option set --------------------------------------------------------------------------------------


@pytest.mark.parametrize("component", EMBEDDERS + RERANKERS)
def test_every_encoder_config_field_is_an_option_with_its_default_and_meaning(component: Any) -> None:
    for name, source in EncoderConfig.model_fields.items():
        field = component.model_fields[name]
        assert field.default == source.default, name
        assert field.description == source.description, name
        assert field.frozen, name


@pytest.mark.parametrize("component", EMBEDDERS + RERANKERS)
def test_options_are_validated_as_the_core_validates_them(component: Any, minilm_path: str) -> None:
    with_path = component(model=Path(minilm_path))
    assert with_path.model == minilm_path and isinstance(with_path.model, str)
    assert with_path.encoder.backend.loaded is Encoder.shared(model=DEMO_MODEL).backend.loaded
    for bad in ({"max_length": True}, {"batch_tokens": 0}, {"device": "meta"}, {"model": " "}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            component(**bad)
    with pytest.raises(ValidationError, match="max_lenght"):  # a misspelt option is not ignored
        component(model=DEMO_MODEL, max_lenght=64)


@pytest.mark.parametrize("component", EMBEDDERS + RERANKERS)
def test_new_options_reach_the_encoder(component: Any, minilm_path: str) -> None:
    made = component(model=minilm_path, normalize=False, pooling="cls")
    assert made.encoder.config.normalize is False and made.encoder.config.pooling == "cls"
    assert made.encoder is component(model=minilm_path, pooling="cls", normalize=False).encoder
    with pytest.raises(ValidationError, match="frozen"):
        made.normalize = True


@pytest.mark.parametrize("component", EMBEDDERS + RERANKERS)
def test_an_encoder_is_used_as_is_and_a_contradiction_refused(component: Any, encoder: Encoder) -> None:
    made = component(encoder=encoder, model=DEMO_MODEL, batch_tokens=encoder.config.batch_tokens)
    assert made.encoder is encoder and made.batch_tokens == encoder.config.batch_tokens
    with pytest.raises(ValidationError, match=r"contradict.*batch_tokens=7 \(the encoder has 4096\)"):
        component(encoder=encoder, batch_tokens=7)
    with pytest.raises(TypeError, match=r"takes a qzhou_plugins Encoder, not str"):
        component(encoder="all-MiniLM-L6-v2")


@pytest.mark.parametrize("component", EMBEDDERS + RERANKERS)
def test_pickle_reattaches_to_the_shared_encoder(component: Any, encoder: Encoder) -> None:
    made = component(model=DEMO_MODEL, batch_tokens=1024)
    data = pickle.dumps(made)
    assert len(data) < 10_000  # the settings, not the weights
    restored = pickle.loads(data)
    assert restored.encoder is made.encoder and restored.batch_tokens == 1024
    assert restored.encoder.backend.loaded is encoder.backend.loaded


@pytest.mark.parametrize("component", EMBEDDERS + RERANKERS)
def test_a_deep_copy_shares_the_encoder(component: Any, encoder: Encoder) -> None:
    made = component(encoder=encoder)
    for copied in (copy.deepcopy(made), made.model_copy(deep=True)):
        assert copied is not made and copied.encoder is encoder
        assert copied.model_dump() == made.model_dump()


# -- lists of texts --------------------------------------------------------------------------------------


def test_a_generator_is_embedded_item_by_item(langchain: QZhouEmbeddings, llama: QZhouEmbedding) -> None:
    expected = langchain.encoder.encode_documents(TEXTS)
    for name, method in document_methods(langchain, llama).items():
        vectors = method(text for text in TEXTS)
        assert len(vectors) == len(TEXTS), name
        np.testing.assert_allclose(vectors, expected, atol=1e-6, err_msg=name)


async def test_a_generator_is_embedded_by_the_async_methods(
    langchain: QZhouEmbeddings, llama: QZhouEmbedding
) -> None:
    expected = langchain.encoder.encode_documents(TEXTS)
    np.testing.assert_allclose(await langchain.aembed_documents(t for t in TEXTS), expected, atol=1e-6)
    np.testing.assert_allclose(await llama.aget_text_embedding_batch(t for t in TEXTS), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ("one string", "not a single str"),
        (None, "not NoneType"),
        (7, "not int"),
        ({"a text": 1}, "not a dict"),
    ],
)
def test_what_is_not_a_list_of_texts_is_refused(
    langchain: QZhouEmbeddings, llama: QZhouEmbedding, texts: Any, message: str
) -> None:
    for method in document_methods(langchain, llama).values():
        with pytest.raises(TypeError, match=message):
            method(texts)


@pytest.mark.parametrize(("texts", "message"), [("one string", "not a single str"), (None, "not NoneType")])
async def test_the_async_batch_refuses_what_is_not_a_list(
    llama: QZhouEmbedding, langchain: QZhouEmbeddings, texts: Any, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        await llama.aget_text_embedding_batch(texts)
    with pytest.raises(TypeError, match=message):
        await langchain.aembed_documents(texts)


def test_a_bad_text_is_named_by_its_position_in_the_whole_batch(llama: QZhouEmbedding) -> None:
    small_batches = QZhouEmbedding(encoder=llama.encoder, embed_batch_size=2)
    with pytest.raises(ValueError, match=r"position\(s\) 3$"):
        small_batches.get_text_embedding_batch([*TEXTS, "  "])


def test_aggregated_queries_are_checked(llama: QZhouEmbedding) -> None:
    expected = np.mean([llama.get_query_embedding(text) for text in TEXTS], axis=0)
    np.testing.assert_allclose(llama.get_agg_embedding_from_queries(t for t in TEXTS), expected, atol=1e-6)
    with pytest.raises(TypeError, match="queries must be a list of strings, not a single str"):
        llama.get_agg_embedding_from_queries(QUERY)
    with pytest.raises(TypeError, match="not NoneType"):
        llama.get_agg_embedding_from_queries(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"queries must not be empty.*position\(s\) 1"):
        llama.get_agg_embedding_from_queries([QUERY, ""])
    with pytest.raises(ValueError, match="at least one query"):
        llama.get_agg_embedding_from_queries([])


async def test_async_aggregated_queries_are_checked(llama: QZhouEmbedding) -> None:
    expected = llama.get_agg_embedding_from_queries(TEXTS)
    np.testing.assert_allclose(await llama.aget_agg_embedding_from_queries(iter(TEXTS)), expected, atol=1e-6)
    with pytest.raises(TypeError, match="not a single str"):
        await llama.aget_agg_embedding_from_queries(QUERY)


# -- texts with nothing to embed, broken Unicode ---------------------------------------------------------


@pytest.mark.parametrize("text", INVISIBLE)
def test_text_with_no_visible_content_is_refused_with_its_position(
    langchain: QZhouEmbeddings, llama: QZhouEmbedding, text: str
) -> None:
    for method in document_methods(langchain, llama).values():
        with pytest.raises(ValueError, match=r"visible content: position\(s\) 1 "):
            method([TEXTS[0], text])
    for method in query_methods(langchain, llama).values():
        with pytest.raises(ValueError, match=r"query must have visible content"):
            method(text)


def test_a_lone_surrogate_is_named_with_its_position(
    langchain: QZhouEmbeddings, llama: QZhouEmbedding
) -> None:
    for method in document_methods(langchain, llama).values():
        with pytest.raises(ValueError, match=r"'\\ud800', at character 3 of position 1"):
            method([TEXTS[0], "tea\ud800"])
    for method in query_methods(langchain, llama).values():
        with pytest.raises(ValueError, match=r"query must be valid Unicode"):
            method("\ud800")


# -- instructions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("instruction", [5, 1.5, ["Find tea"], b"Find tea", True])
@pytest.mark.parametrize("side", ["query_instruction", "document_instruction"])
def test_a_non_string_instruction_is_refused(encoder: Encoder, side: str, instruction: Any) -> None:
    for component in EMBEDDERS:
        with pytest.raises(
            TypeError, match=f"{side} must be a string or None, not {type(instruction).__name__}"
        ):
            component(encoder=encoder, **{side: instruction})


@pytest.mark.parametrize("side", ["query_instruction", "document_instruction"])
def test_a_whitespace_only_instruction_is_refused(encoder: Encoder, side: str) -> None:
    for component in EMBEDDERS:
        with pytest.raises(ValidationError, match=f"{side} must not be whitespace-only"):
            component(encoder=encoder, **{side: " \n "})


def test_an_instruction_changed_after_construction_is_checked_at_the_call(encoder: Encoder) -> None:
    """LlamaIndex reads task and instructions per call, so a later assignment is checked there."""
    embed_model = QZhouEmbedding(encoder=encoder)
    embed_model.query_instruction = 5  # type: ignore[assignment]
    with pytest.raises(TypeError, match="query_instruction must be a string or None, not int"):
        embed_model.get_query_embedding(QUERY)
    embed_model.query_instruction = "Find the answer: "
    np.testing.assert_allclose(
        embed_model.get_query_embedding(QUERY), encoder.encode([QUERY], "Find the answer: ")[0], atol=1e-6
    )


def test_both_adapters_decide_the_sides_by_the_core_rule(encoder: Encoder) -> None:
    overrides = {"task": "Given a question, find the passage", "document_instruction": "Passage: "}
    expected = encoder.prefixes(overrides["task"], document_instruction="Passage: ")
    assert QZhouEmbeddings(encoder=encoder, **overrides).prefixes == expected
    assert QZhouEmbedding(encoder=encoder, **overrides).prefixes == expected


def test_text_instruction_is_a_deprecated_alias_of_document_instruction(encoder: Encoder) -> None:
    with pytest.warns(DeprecationWarning, match="text_instruction is now document_instruction"):
        embed_model = QZhouEmbedding(encoder=encoder, text_instruction="Passage: ")
    assert embed_model.document_instruction == "Passage: "
    assert "text_instruction" not in embed_model.to_dict()
    with pytest.warns(DeprecationWarning, match="document_instruction"):
        assert embed_model.text_instruction == "Passage: "
    with pytest.warns(DeprecationWarning, match="document_instruction"):
        embed_model.text_instruction = ""
    assert embed_model.document_instruction == ""
    np.testing.assert_allclose(
        embed_model.get_text_embedding_batch(TEXTS[:1]), encoder.encode(TEXTS[:1]), atol=1e-6
    )
    with warnings.catch_warnings(), pytest.raises(ValueError, match="disagree"):
        warnings.simplefilter("ignore", DeprecationWarning)
        QZhouEmbedding(encoder=encoder, text_instruction="a: ", document_instruction="b: ")
    old = {**QZhouEmbedding(encoder=encoder).to_dict(), "text_instruction": "Passage: "}
    del old["document_instruction"]
    with pytest.warns(DeprecationWarning):  # a dict saved by an earlier release still loads
        assert QZhouEmbedding.from_dict(old).document_instruction == "Passage: "


# -- rerankers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("component", RERANKERS)
def test_top_n_is_a_count_not_a_bool(component: Any, encoder: Encoder) -> None:
    for value in (True, False):
        with pytest.raises(TypeError, match="top_n must be an int or None, not bool"):
            component(encoder=encoder, top_n=value)
    with pytest.raises(TypeError, match="top_n must be an int or None, not float"):
        component(encoder=encoder, top_n=2.0)


def test_top_n_changed_after_construction_is_checked_at_the_call(encoder: Encoder) -> None:
    reranker = QZhouRerank(encoder=encoder)
    reranker.top_n = True  # type: ignore[assignment]
    with pytest.raises(TypeError, match="top_n must be an int or None, not bool"):
        reranker.postprocess_nodes([NodeWithScore(node=TextNode(text=TEXTS[0]))], query_str=QUERY)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), True, "0.5"])
def test_a_score_threshold_must_be_a_finite_number(encoder: Encoder, threshold: Any) -> None:
    for component in (QZhouReranker, QZhouRerank):
        with pytest.raises((TypeError, ValidationError), match="score_threshold must be a"):
            component(encoder=encoder, score_threshold=threshold)


def test_both_rerankers_order_as_the_one_rank_does_ties_included(encoder: Encoder) -> None:
    texts = [TEXTS[2], TEXTS[0], TEXTS[2], TEXTS[1], TEXTS[0]]  # repeated texts tie exactly: each distinct
    # text is embedded once per call, so its copies share one vector (Encoder.encode_with_prefix)
    scores = score_candidates(encoder, QUERY, texts, task="reranking")
    assert scores[0] == scores[2] and scores[1] == scores[4]
    expected = [candidate.index for candidate in rank(scores, top_n=4)]
    documents = [Document(page_content=text, metadata={"i": i}) for i, text in enumerate(texts)]
    compressed = QZhouReranker(encoder=encoder, top_n=4).compress_documents(documents, QUERY)
    assert [document.metadata["i"] for document in compressed] == expected
    nodes = [NodeWithScore(node=TextNode(id_=str(i), text=text)) for i, text in enumerate(texts)]
    reranked = QZhouRerank(encoder=encoder, top_n=4).postprocess_nodes(nodes, query_str=QUERY)
    assert [int(result.node.node_id) for result in reranked] == expected
    np.testing.assert_allclose([result.score for result in reranked], scores[expected], atol=1e-6)


@pytest.mark.parametrize("adapter", [*EMBEDDERS, *RERANKERS])
@pytest.mark.parametrize("flag", ["x", "yes", 1])
def test_yes_no_options_take_a_bool_only(adapter: type, flag: object) -> None:
    """``show_progress="x"`` used to be read as true; any non-bool is now refused, as the core does."""
    with pytest.raises(ValidationError, match="show_progress"):
        adapter(model=DEMO_MODEL, show_progress=flag)
