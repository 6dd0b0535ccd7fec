"""The request and response bodies: OpenAI's embeddings schema and the Cohere/Jina rerank schema.

Unknown fields are refused rather than ignored: a misspelt ``input_type`` or ``task`` would
otherwise give vectors with the wrong instruction, silently. ``input`` and ``documents`` are read
loosely here and checked by the core's validation, so that a bad item is named by its position in
the same words as everywhere else in the package (and token arrays get their own message).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

InputType = Literal["query", "document"]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: OpenAI's fields, plus ``input_type`` and ``task``."""

    model_config = ConfigDict(extra="forbid")

    input: Any = Field(description="A string or a list of strings (token arrays are refused).")
    model: str | None = Field(
        default=None, description="The served name (documents) or NAME-query (queries); None: the former."
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: little-endian float32, what the openai SDK asks for by default."
    )
    user: str | None = Field(default=None, description="Accepted for compatibility; not used.")
    dimensions: StrictInt | None = Field(
        default=None,
        description="Matryoshka size: the first N dimensions, renormalised; only for a model whose family "
        "was trained for it (matryoshka_min in /v1/models), else only its own dimension. None: the full one.",
    )
    input_type: InputType | None = Field(
        default=None, description="Which side the texts are on; None: the model alias decides (document)."
    )
    task: str | None = Field(
        default=None,
        description="Task type (retrieval, sts, ...), published task name (FiQA2018, ...) or an instruction "
        "sentence; None: retrieval.",
    )


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class RerankRequest(BaseModel):
    """``POST /v1/rerank`` (and ``/rerank``): the shape Cohere, Jina, vLLM and Infinity accept."""

    model_config = ConfigDict(extra="forbid")

    query: Any = Field(description="The search text.")
    documents: Any = Field(description='Candidates: strings or {"text": ...} objects.')
    model: str | None = Field(
        default=None,
        description="The served reranker's name (--rerank-model) or the embedder's (its cosine); None: the "
        "served reranker, else the embedder.",
    )
    top_n: StrictInt | None = Field(default=None, description="Keep the best n; None: all, best first.")
    return_documents: StrictBool = Field(default=False, description="Echo each document's text.")
    task: str | None = Field(default=None, description="Task for the instruction; None: reranking.")
    instruction: str | None = Field(
        default=None,
        description="The instruction of an LLM reranker's template, or the embedder's query instruction; "
        "None: the task's. A cross-encoder takes none.",
    )


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float = Field(
        description="On the scale of the model that scored (its score_scale in /v1/models): a cosine "
        "(-1 to 1) for the embedder, a probability (0 to 1) for a sigmoid cross-encoder or an LLM reranker, "
        "a logit (any real number) for a cross-encoder saved without an activation."
    )
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]
    usage: Usage


class ModelCard(BaseModel):
    """An entry of ``/v1/models``; ``kind`` onwards are this server's extensions (a reranker's card has
    no ``input_type``, ``dimension``, ``family`` or ``pooling``)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "qzhou-plugins"
    kind: str
    """``embedding``, ``cross-encoder`` or ``llm``: what a remote client's reranker of this name is."""
    score_scale: str
    """``cosine``, ``probability`` or ``logit``: what its rerank scores mean."""
    max_length: int
    position_limit: int
    input_type: InputType | None = None
    dimension: int | None = None
    family: str | None = None
    """The model family's record name (``qzhou``, ``qwen3-embedding``, ... ``decoder``, ``bert``): a
    remote client applies that family's instructions, as :mod:`qzhou_plugins.families` says."""
    pooling: str | None = None
    saved_prompts: dict[str, str] | None = None
    """The checkpoint's own sentence-transformers prompts, which its family's prompt style uses."""
    matryoshka_min: int | None = None
    """The smallest ``dimensions`` a request may ask for (absent: the vectors may not be cut)."""
    runtime: str | None = None
    """Where and in what precision the model computes (``cpu, bfloat16 (autocast over float32
    weights)``): bf16 and fp32 vectors of one model are one vector family, so this is information."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
