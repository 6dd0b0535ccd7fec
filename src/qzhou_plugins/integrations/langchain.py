"""LangChain adapter: an ``Embeddings`` and a reranking ``BaseDocumentCompressor`` over the shared core.

Both classes get their :class:`~qzhou_plugins.Encoder` from the process-wide registry, so an embedder
for the vector store and a reranker for the retriever use one copy of the weights between them. The
side of each text is fixed by the LangChain method that receives it: ``embed_query`` is the query
side of the task (instructed), ``embed_documents`` the document side (instructed only for symmetric
tasks). Instructions reach the model exactly as resolved by the core, newlines included.
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
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from typing_extensions import Self

from ..config import DEFAULT_MODEL, DType, EncoderConfig
from ..encoder import Encoder
from ..validation import validate_texts
from ..instructions import Task, TaskLike, TaskType, resolve_task
from ..rerank import rerank

__all__ = ["QZhouEmbeddings", "QZhouReranker"]

_LOADING_OPTIONS = ("model", "device", "dtype", "max_length", "batch_tokens", "show_progress")
"""Fields that say how to build an encoder; an explicit ``encoder`` already decides all of them."""


class _SharedEncoderOptions(BaseModel):
    """The fields both LangChain classes accept to find (or load once) their shared encoder."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: str = Field(default=DEFAULT_MODEL, description="Local directory or Hugging Face hub id.")
    encoder: Encoder | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="An existing encoder to use instead of model/device/... (filled in when omitted).",
    )
    device: str | None = Field(default=None, description="torch device; None picks CUDA when present.")
    dtype: DType = Field(default="auto", description="auto: bf16 on CUDA, fp32 on CPU.")
    max_length: int | None = Field(
        default=None, gt=0, description="Tokens per text (instruction included) before truncation."
    )
    batch_tokens: int = Field(
        default=EncoderConfig.model_fields["batch_tokens"].default,
        gt=0,
        description="Token budget of one forward pass.",
    )
    show_progress: bool | None = Field(default=None, description="Progress bar; None: long jobs only.")

    @model_validator(mode="after")
    def _attach_shared_encoder(self) -> Self:
        if self.encoder is None:
            self.encoder = Encoder.shared(
                model=self.model,
                device=self.device,
                dtype=self.dtype,
                max_length=self.max_length,
                batch_tokens=self.batch_tokens,
                show_progress=self.show_progress,
            )
            return self
        conflicting = sorted(set(_LOADING_OPTIONS) & self.model_fields_set)
        if conflicting:
            raise ValueError(
                f"pass either encoder= or the options to load one, not both: the encoder already "
                f"decides {', '.join(conflicting)}"
            )
        # Mirror the encoder's own settings so that what the object reports is what it uses.
        settings = self.encoder.config
        self.model = settings.model
        self.device = settings.device
        self.dtype = settings.dtype
        self.max_length = settings.max_length
        self.batch_tokens = settings.batch_tokens
        self.show_progress = settings.show_progress
        return self

    @property
    def _shared_encoder(self) -> Encoder:
        if self.encoder is None:  # only reachable if someone assigned None after construction
            raise RuntimeError("this object has no encoder; create a new one instead of clearing .encoder")
        return self.encoder


class QZhouEmbeddings(_SharedEncoderOptions, Embeddings):
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
    query_instruction: str | None = Field(
        default=None, description="Instruction for queries in place of the task's; '' for none."
    )
    document_instruction: str | None = Field(
        default=None, description="Instruction for documents in place of the task's; '' for none."
    )

    _query_prefix: str = PrivateAttr(default="")
    _document_prefix: str = PrivateAttr(default="")

    @field_validator("task")
    @classmethod
    def _task_is_known(cls, task: TaskLike) -> TaskLike:
        return _known_task(task)

    @model_validator(mode="after")
    def _resolve_prefixes(self) -> Self:
        # Resolved once, at construction: a wrong task fails here, not at the first query.
        encoder = self._shared_encoder
        query_prefix, document_prefix = encoder.prefixes(self.task)
        if self.query_instruction is not None:
            query_prefix = encoder.instruction_prefix(self.query_instruction)
        if self.document_instruction is not None:
            document_prefix = encoder.instruction_prefix(self.document_instruction)
        self._query_prefix, self._document_prefix = query_prefix, document_prefix
        return self

    @property
    def prefixes(self) -> tuple[str, str]:
        """The exact (query, document) text placed before every input: check it before indexing."""
        return self._query_prefix, self._document_prefix

    @property
    def dimension(self) -> int:
        """Length of every vector (what a vector store index must be created with)."""
        return self._shared_encoder.dimension

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Vectors of passages to index (document side of the task), in the order given."""
        validate_texts(texts, what="documents")
        vectors = self._shared_encoder.encode_with_prefix(texts, self._document_prefix)
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        """Vector of a search query (query side of the task: the instructed one)."""
        _check_query(text)
        return self._shared_encoder.encode_with_prefix([text], self._query_prefix)[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` in a worker thread, so the event loop keeps serving other tasks."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` in a worker thread; concurrent calls queue on the model, not the loop."""
        return await asyncio.to_thread(self.embed_query, text)


class QZhouReranker(_SharedEncoderOptions, BaseDocumentCompressor):
    """Reorders retrieved documents by their similarity to the query, with the embedding model.

    Meant as the ``base_compressor`` of a ``ContextualCompressionRetriever``. Each document's
    ``page_content`` is scored against the query (the query side of ``task`` carries the reranking
    instruction, documents follow the task's rule) in one forward pass of the shared model, so a
    ``QZhouEmbeddings`` of the same model costs no second copy of the weights.

    The returned documents are copies, best first, at most ``top_n`` (``None`` keeps all) and none
    scoring under ``score_threshold``; each carries its cosine in ``metadata["relevance_score"]``.
    The caller's documents are never modified.

    A document whose ``page_content`` is empty or blank is not an error: it gets the lowest possible
    score (-1.0), so it sorts last and falls under any threshold, instead of stopping the chain on
    one empty page. An empty or non-string query is still an error.
    """

    top_n: int | None = Field(default=3, ge=1, description="Documents to keep; None keeps all.")
    score_threshold: float | None = Field(
        default=None, description="Drop documents whose relevance score is below this cosine."
    )
    task: str | Task | None = Field(
        default=TaskType.RERANKING.value,
        description="Task type, published task name, custom instruction, or Task.",
    )

    @field_validator("task")
    @classmethod
    def _task_is_known(cls, task: TaskLike) -> TaskLike:
        return _known_task(task)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The documents most relevant to ``query``, best first, with their ``relevance_score``."""
        _check_query(query)
        documents = list(documents)
        strangers = [i for i, document in enumerate(documents) if not isinstance(document, Document)]
        if strangers:
            raise TypeError(f"documents must be langchain Document objects: not at position(s) {strangers}")
        if not documents:
            return []
        ranked = rerank(
            self._shared_encoder,
            query,
            [document.page_content for document in documents],
            top_n=self.top_n,
            threshold=self.score_threshold,
            task=self.task,
            empty="lowest",
        )
        return [_with_score(documents[candidate.index], candidate.score) for candidate in ranked]

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


def _check_query(query: Any) -> None:
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, not {type(query).__name__}")
    if not query.strip():
        raise ValueError("query must not be empty or whitespace-only")


def _with_score(document: Document, score: float) -> Document:
    """A copy of ``document`` with its score; the metadata is copied deeply so no caller data is shared."""
    metadata = copy.deepcopy(document.metadata)
    metadata["relevance_score"] = float(score)
    return document.model_copy(update={"metadata": metadata})
