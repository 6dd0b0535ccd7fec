"""LangChain adapter: an ``Embeddings`` and a reranking ``BaseDocumentCompressor`` over the shared core.

The embedder accepts every :class:`~qzhou_plugins.EncoderConfig` field (or ``encoder=``), the
reranker every :class:`~qzhou_plugins.RerankerConfig` field (or ``encoder=`` / ``reranker=``); both
get their model from the process-wide registry, so an embedder for the vector store and an
embedding reranker of the same model use one copy of the weights between them.
The side of each text is fixed by the LangChain method that receives it: ``embed_query`` is the
query side of the task (instructed), ``embed_documents`` the document side (instructed only for
symmetric tasks). Instructions reach the model exactly as resolved by the core, newlines included.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.embeddings import Embeddings
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "qzhou_plugins.langchain needs langchain-core: pip install 'qzhou-plugins[langchain]'"
    ) from error
from pydantic import Field, PrivateAttr, field_validator, model_validator
from typing_extensions import Self

from ..instructions import Task, TaskLike, TaskType, resolve_task
from ..validation import as_list, check_count, positions, validate_text
from ._options import EncoderOptions, InstructionOptions, RerankerOptions, RerankOptions

__all__ = ["QZhouEmbeddings", "QZhouReranker"]


class QZhouEmbeddings(InstructionOptions, EncoderOptions, Embeddings):  # type: ignore[misc,valid-type]
    """QZhou-Embedding (or any model the core loads) as a LangChain ``Embeddings``.

    ``embed_query`` puts the task's instruction before the query; ``embed_documents`` leaves passages
    plain for asymmetric tasks (retrieval) and instructs them too for symmetric ones (``"sts"``,
    clustering, ...), because that is how the model was trained: one instruction on both sides of a
    retrieval index silently lowers its quality.

    ``task`` accepts a task type, a task name of the authors' MTEB/C-MTEB evaluation, a custom
    instruction (any sentence; query side only) or a :class:`~qzhou_plugins.Task`.
    ``query_instruction`` / ``document_instruction`` override one side with an instruction of your own
    (``""`` means none); left as ``None``, that side follows the task.

    Two instances with the same model, device and dtype share one loaded model. Vectors are
    L2-normalised, so LangChain's cosine, dot-product and Euclidean rankings agree.

    Example:
        ```python
        from qzhou_plugins.langchain import QZhouEmbeddings
        from langchain_core.vectorstores import InMemoryVectorStore

        embeddings = QZhouEmbeddings(model="Kingsoft-LLM/QZhou-Embedding", max_length=1024)
        store = InMemoryVectorStore.from_texts(["QZhou is a 7B embedder."], embeddings)
        ```
    """

    task: str | Task | None = Field(
        default=TaskType.RETRIEVAL.value,
        description="Task type, published task name, custom instruction, or Task.",
    )

    _query_prefix: str = PrivateAttr(default="")
    _document_prefix: str = PrivateAttr(default="")

    @field_validator("task")
    @classmethod
    def _task_is_known(cls, task: TaskLike) -> TaskLike:
        return _known_task(task)

    @model_validator(mode="after")
    def _resolve_prefixes(self) -> Self:
        # Resolved once, at construction, by the core's one rule: a wrong task fails here, not at
        # the first query, and every call then uses the very same prefixes.
        self._query_prefix, self._document_prefix = self.encoder.prefixes(
            self.task,
            query_instruction=self.query_instruction,
            document_instruction=self.document_instruction,
        )
        return self

    @property
    def prefixes(self) -> tuple[str, str]:
        """The exact (query, document) text placed before every input: check it before indexing."""
        return self._query_prefix, self._document_prefix

    @property
    def dimension(self) -> int:
        """Length of every vector (what a vector store index must be created with)."""
        return self.encoder.dimension

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Vectors of passages to index (document side of the task), in the order given.

        Any iterable of strings works, a generator included (it is read once); a lone string, a
        mapping or a set is refused rather than misread as a list.
        """
        vectors = self.encoder.encode_with_prefix(texts, self._document_prefix, what="documents")
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        """Vector of a search query (query side of the task: the instructed one)."""
        query = validate_text(text, what="query")
        return self.encoder.encode_with_prefix([query], self._query_prefix, what="query")[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` without blocking the event loop."""
        vectors = await self.encoder.aencode_with_prefix(texts, self._document_prefix, what="documents")
        return vectors.tolist()

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` without blocking the loop: concurrent calls queue on the model instead."""
        query = validate_text(text, what="query")
        vectors = await self.encoder.aencode_with_prefix([query], self._query_prefix, what="query")
        return vectors[0].tolist()


class QZhouReranker(RerankOptions, RerankerOptions, BaseDocumentCompressor):  # type: ignore[misc,valid-type]
    """Reorders retrieved documents by their relevance to the query, with any reranker of the core.

    Meant as the ``base_compressor`` of a ``ContextualCompressionRetriever``. ``model`` names the
    reranker and its kind is read from the checkpoint (or given as ``kind=``): an embedding model
    (QZhou, MiniLM: the cosine of the instructed query and each document, on the very encoder a
    ``QZhouEmbeddings`` of the same model uses, so no second copy of the weights), a cross-encoder
    (ms-marco-MiniLM, bge-reranker: each pair read together) or an LLM reranker (Qwen3-Reranker:
    the probability that the model answers "yes"). Every :class:`~qzhou_plugins.RerankerConfig`
    field is an option; ``encoder=`` (an existing encoder) or ``reranker=`` (an existing
    :class:`~qzhou_plugins.rerank.Reranker`) can be passed instead.

    The returned documents are copies, best first, at most ``top_n`` (``None`` keeps all) and none
    scoring under ``score_threshold``. Each carries its score in ``metadata["relevance_score"]`` and
    the scale that score is on in ``metadata["relevance_score_scale"]``: ``"cosine"`` (-1 to 1),
    ``"probability"`` (0 to 1) or ``"logit"`` (unbounded). ``score_threshold`` is on that same scale,
    so a threshold tuned for one reranker means nothing for another kind. The caller's documents are
    never modified.

    ``instruction`` overrides the task's instruction: the query side of an embedding reranker, the
    ``<Instruct>`` of an LLM reranker; a cross-encoder takes none. A document whose ``page_content``
    is empty or blank is not an error: it gets the lowest score of the scale, so it sorts last and
    falls under any threshold, instead of stopping the chain on one empty page. An empty or
    non-string query is still an error.

    Example:
        ```python
        from langchain.retrievers import ContextualCompressionRetriever
        from qzhou_plugins.langchain import QZhouReranker

        reranker = QZhouReranker(model="cross-encoder/ms-marco-MiniLM-L6-v2", top_n=5)
        retriever = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=base)
        ```
    """

    top_n: int | None = Field(default=3, ge=1, description="Documents to keep; None keeps all.")
    task: str | Task | None = Field(
        default=TaskType.RERANKING.value,
        description="Task type, published task name, custom instruction, or Task.",
    )

    @field_validator("task")
    @classmethod
    def _task_is_known(cls, task: TaskLike) -> TaskLike:
        return _known_task(task)

    @field_validator("top_n", mode="before")
    @classmethod
    def _top_n_is_a_count(cls, value: Any) -> int | None:
        return check_count(value, what="top_n", minimum=1)  # True is not 1 document

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The documents most relevant to ``query``, best first, with their score and its scale."""
        documents = as_list(documents, what="documents", kind="langchain Document objects")
        strangers = [i for i, document in enumerate(documents) if not isinstance(document, Document)]
        if strangers:
            raise TypeError(
                f"documents must be langchain Document objects: not at position(s) {positions(strangers)}"
            )
        ranked = self.ranked(query, [document.page_content for document in documents])
        scale = self.reranker.score_scale
        return [_with_score(documents[candidate.index], candidate.score, scale) for candidate in ranked]

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """:meth:`compress_documents` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)


def _known_task(task: TaskLike) -> TaskLike:
    """Fail on an unknown task before any model is loaded; the caller's value is kept as given."""
    resolve_task(task)
    return task


def _with_score(document: Document, score: float, scale: str) -> Document:
    """A copy of ``document`` with its score and scale; the metadata is copied deeply so no caller
    data is shared."""
    metadata = copy.deepcopy(document.metadata)
    metadata["relevance_score"] = float(score)
    metadata["relevance_score_scale"] = scale
    return document.model_copy(update={"metadata": metadata})
