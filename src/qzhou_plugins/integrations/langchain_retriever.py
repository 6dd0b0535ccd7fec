"""LangChain retriever over a QZhouCollection: dense, lexical or hybrid search, with filters and rerank.

LangChain users build hybrid search by hand today (an ``EnsembleRetriever`` of a vector store and an
in-memory ``BM25Retriever`` rebuilt on every start). :class:`QZhouRetriever` is one retriever over a
collection whose lexical index is persisted beside it and kept in step with every write.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "qzhou_plugins.langchain needs langchain-core: pip install 'qzhou-plugins[langchain]'"
    ) from error
from pydantic import ConfigDict, Field, field_validator, model_validator
from typing_extensions import Self

from .retrieval import DEFAULTS, QUERY_FIELDS, checked_collection, checked_options, retrieve, score_metadata

__all__ = ["QZhouRetriever"]


class QZhouRetriever(BaseRetriever):
    """Documents of a :class:`~qzhou_plugins.chroma.QZhouCollection` for a query, by meaning, words or both.

    ``mode`` is ``"hybrid"`` (the default: the dense and lexical rankings fused by ``fusion``,
    ``"rrf"`` or ``"weighted"``), ``"dense"`` or ``"lexical"``; ``k`` documents are returned; ``where``
    and ``where_document`` are Chroma filters that hold on both sides; ``rerank_candidates=N`` rescores
    the best N (of the fused list in hybrid mode) with ``reranker``: a model name (a cross-encoder, an
    LLM reranker such as Qwen3-Reranker, an embedding model) or a
    :class:`~qzhou_plugins.rerank.Reranker`; None (the default) is the collection's own model;
    ``rerank_task`` and ``rerank_instruction`` are what the reranker is given (an embedding or LLM
    reranker; a cross-encoder takes no instruction). Every option can also be given per call:
    ``retriever.invoke("query", k=3, where={"topic": "pets"})``.

    Each document has the record's id and text, its metadata, and what the search said of it:
    ``relevance_score`` (the score it was ranked by) and ``relevance_score_scale`` (that score's
    scale: ``cosine``, ``bm25``, ``rrf``, ``weighted``, or a reranker's ``probability`` or
    ``logit``), ``dense_score``, ``lexical_score`` and ``fused_score`` where they apply, and
    ``sources`` (the side(s) that found it).

    Example:
        ```python
        from qzhou_plugins.chroma import QZhouCollection
        from qzhou_plugins.langchain import QZhouRetriever

        retriever = QZhouRetriever(collection=QZhouCollection.open("papers"), k=5)
        documents = retriever.invoke("error code E4711")
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    collection: Any = Field(description="The QZhouCollection to search.")
    k: int = Field(default=4, description="Documents to return.")
    mode: str = Field(default=DEFAULTS["mode"], description="dense, lexical or hybrid.")
    fusion: str = Field(default=DEFAULTS["fusion"], description="How hybrid fuses: rrf or weighted.")
    candidates: int = Field(default=DEFAULTS["candidates"], description="Hits each side hands to the fusion.")
    rrf_k: float = Field(default=DEFAULTS["rrf_k"], description="The constant of reciprocal-rank fusion.")
    alpha: float = Field(default=DEFAULTS["alpha"], description="Weight of the dense side (weighted fusion).")
    where: Any = Field(default=None, description="Chroma metadata filter (a mapping), or None.")
    where_document: Any = Field(default=None, description="Chroma document filter (a mapping), or None.")
    rerank_candidates: int | None = Field(default=None, description="Rerank this many with the reranker.")
    reranker: Any = Field(
        default=None, description="Reranker: a model name or a Reranker; None: the collection's model."
    )
    rerank_task: Any = Field(
        default=DEFAULTS["rerank_task"], description="Task of the rerank: a task type, name or Task."
    )
    rerank_instruction: str | None = Field(
        default=None, description="Instruction of the rerank in place of the task's (not a cross-encoder's)."
    )

    @field_validator("collection")
    @classmethod
    def _is_a_collection(cls, collection: Any) -> Any:
        return checked_collection(collection)

    @model_validator(mode="after")
    def _options_are_valid(self) -> Self:
        checked_options({key: getattr(self, key) for key in (*QUERY_FIELDS, "k")}, "k")
        return self

    def _search(self, query: str, overrides: dict[str, Any]) -> list[Document]:
        options = checked_options(
            {**{key: getattr(self, key) for key in (*QUERY_FIELDS, "k")}, **overrides}, "k"
        )
        hits = retrieve(self.collection, query, options.pop("k"), options)
        return [
            Document(id=hit.id, page_content=hit.document, metadata={**hit.metadata, **score_metadata(hit)})
            for hit in hits
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self._search(query, kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        """The same search in a worker thread, so that the event loop keeps running."""
        return await asyncio.to_thread(self._search, query, kwargs)
