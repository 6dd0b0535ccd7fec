"""Each built-in family against its reference implementation, on a tiny random checkpoint saved in
the family's own published layout: the vectors must be the same (min cosine >= 0.99999).

The references are never our code path: sentence-transformers on the folder where the family ships a
sentence-transformers config (Qwen3-Embedding, the BERT-style folders); the model card's own pooling
code on plain transformers otherwise (E5-Mistral; gte-Qwen2, whose bidirectional attention needs its
remote code under sentence-transformers, so plain transformers runs it with an all-visible 4D mask).
The prompts of the references are written here as the model cards publish them, not asked of us.
Queries and documents, with and without instructions, a batch of mixed lengths (and a truncated
text), padded on the left and on the right on the reference side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from qzhou_plugins import Encoder

TEXTS = [
    "hi",
    "What causes the seasons on Earth?",
    "一只猫坐在垫子上，看着窗外的鸟。",
    "Aspirin lowers the risk of a second heart attack in patients with coronary artery disease, "
    "but the benefit must be weighed against the risk of bleeding, which rises with age. " * 3,
    "Tokenizers split text into pieces.",
]
"""Mixed lengths (2 to about 110 tokens), English and Chinese: one batch, much padding."""
OWN = "Given a scientific claim, retrieve documents that support or refute the claim"
STS = "Retrieve semantically similar text"
RETRIEVAL = "Given a web search query, retrieve relevant passages that answer the query"
SIDES = ["left", "right"]


def assert_same(ours: np.ndarray, theirs: Any, what: str) -> None:
    theirs = np.asarray(theirs, dtype=np.float32)
    assert ours.shape == theirs.shape, what
    cosines = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosines.min() >= 0.99999, f"{what}: text {int(cosines.argmin())} has cosine {cosines.min():.7f}"


def last_token_pool(last_hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The pooling function of the E5-Mistral-7B-instruct and gte-Qwen2-instruct model cards."""
    left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
    if left_padding:
        return last_hidden_states[:, -1]
    sequence_lengths = attention_mask.sum(dim=1) - 1
    batch_size = last_hidden_states.shape[0]
    return last_hidden_states[torch.arange(batch_size), sequence_lengths]


@pytest.fixture(scope="module")
def folders(family_checkpoints: dict[str, str]) -> dict[str, str]:
    return family_checkpoints


@pytest.fixture(scope="module")
def ours(folders: dict[str, str]) -> dict[str, Encoder]:
    """Our encoders, once per module: each family's, and the decoders' cut to 12 tokens ("... cut")."""
    encoders = {name: Encoder.shared(model=folder) for name, folder in folders.items()}
    for name in ("qwen3", "e5-mistral"):
        encoders[f"{name} cut"] = Encoder(model=folders[name], max_length=12)
    return encoders


@pytest.fixture(scope="module")
def plain(folders: dict[str, str]) -> dict[str, tuple[Any, Any]]:
    """Plain transformers (eager attention) and the tokenizer, for the model-card references."""
    from transformers import AutoModel, AutoTokenizer

    return {
        name: (
            AutoModel.from_pretrained(folders[name], attn_implementation="eager").eval(),
            AutoTokenizer.from_pretrained(folders[name]),
        )
        for name in ("gte", "e5-mistral")
    }


# -- sentence-transformers folders --------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen3_reference(folders: dict[str, str]) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(folders["qwen3"], device="cpu")


@pytest.mark.parametrize("side", SIDES)
def test_qwen3_embedding_matches_sentence_transformers(
    ours: dict[str, Encoder], qwen3_reference: Any, side: str
) -> None:
    mine, theirs = ours["qwen3"], qwen3_reference
    theirs.tokenizer.padding_side = side
    st = {"normalize_embeddings": True, "batch_size": len(TEXTS)}
    assert_same(mine.encode_queries(TEXTS), theirs.encode_query(TEXTS, **st), "queries")
    assert_same(mine.encode_documents(TEXTS), theirs.encode_document(TEXTS, **st), "documents")
    assert_same(
        mine.encode(TEXTS, instruction=OWN),
        theirs.encode(TEXTS, prompt=f"Instruct: {OWN}\nQuery:", **st),
        "own instruction",
    )
    sts = theirs.encode(TEXTS, prompt=f"Instruct: {STS}\nQuery:", **st)
    assert_same(mine.encode_queries(TEXTS, task="sts"), sts, "sts queries")
    assert_same(mine.encode_documents(TEXTS, task="sts"), sts, "sts documents")
    theirs.max_seq_length = 12  # a text cut short keeps its <|endoftext|> on both sides
    try:
        cut = theirs.encode_document(TEXTS, **st)
    finally:
        theirs.max_seq_length = 8192
    assert_same(ours["qwen3 cut"].encode_documents(TEXTS), cut, "truncated")


BGE_QUERY = "Represent this sentence for searching relevant passages: "


@pytest.mark.parametrize(
    ("style", "calls"),
    [
        ("bge", [("query", None, BGE_QUERY), ("document", None, ""), ("instruction", OWN, OWN)]),
        ("e5", [("query", None, "query: "), ("document", None, "passage: "), ("query", "sts", "query: ")]),
        (
            "nomic",
            [
                ("query", None, "search_query: "),
                ("document", None, "search_document: "),
                ("query", "clustering", "clustering: "),
                ("document", "classification", "classification: "),
            ],
        ),
    ],
)
def test_bert_style_folders_match_sentence_transformers(
    folders: dict[str, str], ours: dict[str, Encoder], style: str, calls: list[tuple[str, str | None, str]]
) -> None:
    """Each call of ours against sentence-transformers given the prompt the model card says for it
    (E5's documents: "passage: ", which ``encode_document`` of sentence-transformers 6 no longer picks
    from the saved prompts, its empty default "document" prompt coming first).

    Right padding only on the reference side: BERT's positions are absolute, so a left-padded BERT
    batch is another computation (sentence-transformers passes no position ids), not a reference."""
    from sentence_transformers import SentenceTransformer

    encoder, theirs = ours[style], SentenceTransformer(folders[style], device="cpu")
    for side, task, prompt in calls:
        if side == "instruction":
            mine = encoder.encode(TEXTS, instruction=task)
        elif side == "query":
            mine = encoder.encode_queries(TEXTS, task)
        else:
            mine = encoder.encode_documents(TEXTS, task)
        reference = theirs.encode(TEXTS, prompt=prompt, normalize_embeddings=True, batch_size=len(TEXTS))
        assert_same(mine, reference, f"{style} {side} {task}")


# -- model-card code on plain transformers ------------------------------------------------------------


def gte_qwen2_reference(
    model: Any, tokenizer: Any, texts: list[str], side: str, causal: bool = False
) -> torch.Tensor:
    """gte-Qwen2-instruct's model card (its tokenizer appends <|endoftext|>, last-token pooling) on
    plain transformers, bidirectional through an explicit 4D mask in which every real token sees
    every other one (padding stays hidden)."""
    tokenizer.padding_side = side
    batch = tokenizer(texts, max_length=8192, padding=True, truncation=True, return_tensors="pt")
    mask = batch["attention_mask"]
    visible = mask[:, None, None, :].bool().expand(-1, 1, mask.shape[1], -1)
    additive = torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)
    with torch.inference_mode():
        hidden = model(
            input_ids=batch["input_ids"], attention_mask=mask if causal else additive
        ).last_hidden_state
    return torch.nn.functional.normalize(last_token_pool(hidden, mask), p=2, dim=1)


@pytest.mark.parametrize("side", SIDES)
def test_gte_qwen2_matches_its_model_card_bidirectionally(
    ours: dict[str, Encoder], plain: dict[str, tuple[Any, Any]], side: str
) -> None:
    model, tokenizer = plain["gte"]
    mine = ours["gte"]
    query = f"Instruct: {RETRIEVAL}\nQuery: "
    assert_same(
        mine.encode_queries(TEXTS),
        gte_qwen2_reference(model, tokenizer, [query + t for t in TEXTS], side),
        "queries",
    )
    documents = gte_qwen2_reference(model, tokenizer, TEXTS, side)
    assert_same(mine.encode_documents(TEXTS), documents, "documents")
    own = gte_qwen2_reference(model, tokenizer, [f"Instruct: {OWN}\nQuery: {t}" for t in TEXTS], side)
    assert_same(mine.encode(TEXTS, instruction=OWN), own, "own instruction")
    causal = gte_qwen2_reference(model, tokenizer, TEXTS, side, causal=True)
    assert (documents * causal).sum(dim=1).max() < 0.99  # the reference really is bidirectional


def e5_mistral_reference(
    model: Any, tokenizer: Any, texts: list[str], side: str, max_length: int = 4096
) -> torch.Tensor:
    """E5-Mistral-7B-instruct's model card: tokenise to max_length - 1 without padding, append the
    eos token, pad, last-token pooling, normalise."""
    tokenizer.padding_side = side
    batch = tokenizer(
        texts, max_length=max_length - 1, return_attention_mask=False, padding=False, truncation=True
    )
    batch["input_ids"] = [[*ids, tokenizer.eos_token_id] for ids in batch["input_ids"]]
    batch = tokenizer.pad(batch, padding=True, return_attention_mask=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    return torch.nn.functional.normalize(last_token_pool(hidden, batch["attention_mask"]), p=2, dim=1)


@pytest.mark.parametrize("side", SIDES)
def test_e5_mistral_matches_its_model_card(
    ours: dict[str, Encoder], plain: dict[str, tuple[Any, Any]], side: str
) -> None:
    model, tokenizer = plain["e5-mistral"]
    mine = ours["e5-mistral"]
    queries = [f"Instruct: {RETRIEVAL}\nQuery: {t}" for t in TEXTS]
    assert_same(mine.encode_queries(TEXTS), e5_mistral_reference(model, tokenizer, queries, side), "queries")
    assert_same(
        mine.encode_documents(TEXTS), e5_mistral_reference(model, tokenizer, TEXTS, side), "documents"
    )
    own = [f"Instruct: {OWN}\nQuery: {t}" for t in TEXTS]
    assert_same(
        mine.encode(TEXTS, instruction=OWN),
        e5_mistral_reference(model, tokenizer, own, side),
        "own instruction",
    )
    sts = [f"Instruct: {STS}.\nQuery: {t}" for t in TEXTS]
    assert_same(
        mine.encode_documents(TEXTS, task="sts"),
        e5_mistral_reference(model, tokenizer, sts, side),
        "sts documents",
    )
    cut = e5_mistral_reference(model, tokenizer, TEXTS, side, max_length=12)
    assert_same(ours["e5-mistral cut"].encode_documents(TEXTS), cut, "truncated")
