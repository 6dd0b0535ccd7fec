"""LlamaIndex retriever over a QZhouCollection: dense, lexical or hybrid search, as ``NodeWithScore``.

LlamaIndex's own ``BM25Retriever`` is persisted but rebuilt on every change of the documents;
:class:`QZhouRetriever` searches a collection whose lexical index is kept in step with every write, and
plugs into a ``RetrieverQueryEngine`` like any retriever.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "qzhou_plugins.llama_index needs llama-index-core: pip install 'qzhou-plugins[llama-index]'"
    ) from error

from .retrieval import (
    DEFAULTS,
    QUERY_FIELDS,
    SCORE_KEYS,
    checked_collection,
    checked_options,
    retrieve,
    score_metadata,
)

__all__ = ["QZhouRetriever"]


class QZhouRetriever(BaseRetriever):
    """Nodes of a :class:`~qzhou_plugins.chroma.QZhouCollection` for a query, by meaning, words or both.

    ``mode`` is ``"hybrid"`` (the default: the dense and lexical rankings fused by ``fusion``, ``"rrf"``
    or ``"weighted"``), ``"dense"`` or ``"lexical"``; ``similarity_top_k`` nodes are returned; ``where``
    and ``where_document`` are Chroma filters that hold on both sides; ``rerank_candidates=N`` rescores
    the best N (of the fused list in hybrid mode) with ``reranker``: a model name (a cross-encoder, an
    LLM reranker such as Qwen3-Reranker, an embedding model) or a
    :class:`~qzhou_plugins.rerank.Reranker`; None (the default) is the collection's own model;
    ``rerank_task`` and ``rerank_instruction`` are what the reranker is given (an embedding or LLM
    reranker; a cross-encoder takes no instruction).

    Each node is a ``TextNode`` with the record's id, text and metadata; ``NodeWithScore.score`` is the
    score it was ranked by, and its metadata also holds ``relevance_score_scale`` (that score's scale:
    ``cosine``, ``bm25``, ``rrf``, ``weighted``, or a reranker's ``probability`` or ``logit``),
    ``dense_score``, ``lexical_score``, ``fused_score`` (where they apply) and ``sources`` (the
    side(s) that found it), kept out of what the LLM and the embedder read.

    Example:
        ```python
        from llama_index.core.query_engine import RetrieverQueryEngine
        from qzhou_plugins.chroma import QZhouCollection
        from qzhou_plugins.llama_index import QZhouRetriever

        retriever = QZhouRetriever(QZhouCollection.open("papers"), similarity_top_k=5)
        engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
        ```
    """

    def __init__(
        self,
        collection: Any,
        *,
        similarity_top_k: int = 4,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **options: Any,
    ) -> None:
        self.collection = checked_collection(collection)
        self.options = {**DEFAULTS, **checked_options({**options, "similarity_top_k": similarity_top_k},
                                                      "similarity_top_k")}  # fmt: skip
        self.similarity_top_k = self.options.pop("similarity_top_k")
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = retrieve(self.collection, query_bundle.query_str, self.similarity_top_k, self.options)
        return [NodeWithScore(node=_node(hit), score=hit.score) for hit in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The same search in a worker thread, so that the event loop keeps running."""
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def __repr__(self) -> str:
        chosen = ", ".join(
            f"{key}={self.options[key]!r}" for key in QUERY_FIELDS if self.options[key] is not None
        )
        return f"QZhouRetriever({self.collection.name!r}, similarity_top_k={self.similarity_top_k}, {chosen})"


def _node(hit: Any) -> TextNode:
    """A hit as a node: its id, text and metadata, and the scores (which the LLM and embedder never see)."""
    return TextNode(
        id_=hit.id,
        text=hit.document,
        metadata={**hit.metadata, **score_metadata(hit)},
        excluded_llm_metadata_keys=list(SCORE_KEYS),
        excluded_embed_metadata_keys=list(SCORE_KEYS),
    )
