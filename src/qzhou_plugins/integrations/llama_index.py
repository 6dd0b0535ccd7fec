"""LlamaIndex adapter: an embedding model and a node postprocessor on the shared core.

``QZhouEmbedding`` keeps the two sides apart the way LlamaIndex names them: the query methods embed
what a retriever searches with (instructed), the text methods embed what an index stores (instructed
only for symmetric tasks). Its ``embed_batch_size`` is as large as LlamaIndex allows, so a whole
ingestion batch reaches the core, which sorts by length and fills batches by tokens itself; small
count-based batches in document order would mostly compute padding.

``QZhouRerank`` reranks retrieved nodes with a reranker of the core: the embedding model already in
memory (a bi-encoder cosine, no second model), a cross-encoder or an LLM reranker.

The embedder accepts every :class:`~qzhou_plugins.EncoderConfig` field (or ``encoder=``), the
reranker every :class:`~qzhou_plugins.RerankerConfig` field (or ``encoder=`` / ``reranker=``), as
pydantic fields from the option sets both adapters share; the loaded model is a private attribute,
so ``to_dict``/``from_dict`` serialise the settings and a restored object reattaches to the
process-wide shared one instead of loading the weights again.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import Field, field_validator
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "qzhou_plugins.llama_index needs llama-index-core: pip install 'qzhou-plugins[llama-index]'"
    ) from error

from ..instructions import Task, TaskType, resolve_task
from ..validation import check_count, validate_text, validate_texts
from ._options import EncoderOptions, InstructionOptions, RerankerOptions, RerankOptions

__all__ = ["QZhouEmbedding", "QZhouRerank"]

dispatcher = get_dispatcher(__name__)

MAX_EMBED_BATCH_SIZE = 2048
"""The largest ``embed_batch_size`` LlamaIndex accepts, and its default insert batch of a vector index."""

_TEXTS = "texts to embed (node contents, MetadataMode.EMBED)"
"""How document-side texts are named in errors."""


def _checked_task(task: Any) -> Any:
    """A TaskType member as its plain value, so that it serialises as the string users write.

    A task name is looked up here, so that a typo fails (with the close matches) before any weights
    are loaded; a Task, or its dict from ``to_dict()``, is pydantic's to validate.
    """
    if isinstance(task, TaskType):
        return task.value
    if isinstance(task, str):
        resolve_task(task)
    return task


def _renamed_text_instruction(data: dict[str, Any]) -> dict[str, Any]:
    """``text_instruction=`` (the old name) as ``document_instruction=``, with a DeprecationWarning."""
    if "text_instruction" not in data:
        return data
    data = dict(data)
    value = data.pop("text_instruction")
    _warn_text_instruction(stacklevel=4)
    if data.get("document_instruction") is not None and data["document_instruction"] != value:
        raise ValueError(
            f"text_instruction={value!r} and document_instruction={data['document_instruction']!r} "
            "disagree: text_instruction is the old name of document_instruction, pass only the latter"
        )
    data["document_instruction"] = value
    return data


def _warn_text_instruction(stacklevel: int) -> None:
    warnings.warn(
        "QZhouEmbedding's text_instruction is now document_instruction (one name across the package); "
        "text_instruction will be removed in a future release",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class QZhouEmbedding(InstructionOptions, EncoderOptions, BaseEmbedding):  # type: ignore[misc,valid-type]
    """QZhou-Embedding (or any model the core loads) as a LlamaIndex embedding model.

    ``task`` picks the instructions: a task type (``"retrieval"``, ``"sts"``, ...), a task name of
    the authors' published evaluation (``"FiQA2018"``) or a custom query instruction (a sentence).
    ``query_instruction`` / ``document_instruction`` override the task on their side with an explicit
    instruction in the model's format (``""`` means none); leave them ``None`` to follow the task.
    (``text_instruction`` is the deprecated old name of ``document_instruction``.)

    Construct it with ``model=`` (LlamaIndex's ``model_name`` is kept equal to it) or from a loaded
    ``encoder=``. Options that decide the loaded model are frozen after construction; ``task`` and
    the instructions are read at each call and may be changed.
    """

    _synonyms: ClassVar[dict[str, str]] = {"model_name": "model"}

    model_name: str = Field(default="", description="Same as model: the checkpoint.", frozen=True)
    embed_batch_size: int = Field(
        default=MAX_EMBED_BATCH_SIZE,
        gt=0,
        le=MAX_EMBED_BATCH_SIZE,
        description="Texts handed to the core per call; the core plans its own batches by tokens.",
    )
    task: str | Task | None = Field(
        default=None,
        description="Task type, published task name or custom query instruction; None: model default.",
    )

    def __init__(self, **data: Any) -> None:
        data = _renamed_text_instruction(data)
        data["task"] = _checked_task(data.get("task"))
        super().__init__(**data)
        overridden = self.query_instruction is not None and self.document_instruction is not None
        if self.task is not None and overridden:
            raise ValueError(
                f"task={self.task!r} would be ignored: query_instruction and document_instruction are both "
                "set, and an explicit instruction overrides the task on its side"
            )

    @classmethod
    def class_name(cls) -> str:
        return "QZhouEmbedding"

    @property
    def text_instruction(self) -> str | None:
        """Deprecated: the old name of :attr:`document_instruction`."""
        _warn_text_instruction(stacklevel=3)
        return self.document_instruction

    @text_instruction.setter
    def text_instruction(self, value: str | None) -> None:
        _warn_text_instruction(stacklevel=5)  # the caller, past pydantic's __setattr__
        self.document_instruction = value

    def to_payload(self) -> dict[str, Any]:
        """What instrumentation events report about this model: the base fields plus the task."""
        return {**super().to_payload(), "task": self.task, "batch_tokens": self.batch_tokens}

    @property
    def prefixes(self) -> tuple[str, str]:
        """The exact (query, document) text placed before inputs, from the task and instructions now.

        Read at each call (``task`` and the instructions may be changed after construction); the
        rule that decides them is the core's (:meth:`Encoder.prefixes`).
        """
        return self.encoder.prefixes(
            self.task,
            query_instruction=self.query_instruction,
            document_instruction=self.document_instruction,
        )

    # -- query side ---------------------------------------------------------------------------------

    def _get_query_embedding(self, query: str) -> Embedding:
        checked = validate_text(query, what="query")
        return self.encoder.encode_with_prefix([checked], self.prefixes[0], what="query")[0].tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        checked = validate_text(query, what="query")
        vectors = await self.encoder.aencode_with_prefix([checked], self.prefixes[0], what="query")
        return vectors[0].tolist()

    def get_agg_embedding_from_queries(
        self, queries: list[str], agg_fn: Callable[..., Embedding] | None = None
    ) -> Embedding:
        """The aggregate (by default the mean) of the query vectors of ``queries``."""
        return super().get_agg_embedding_from_queries(_some_queries(queries), agg_fn)

    async def aget_agg_embedding_from_queries(
        self, queries: list[str], agg_fn: Callable[..., Embedding] | None = None
    ) -> Embedding:
        """:meth:`get_agg_embedding_from_queries` without blocking the event loop."""
        return await super().aget_agg_embedding_from_queries(_some_queries(queries), agg_fn)

    # -- document side ------------------------------------------------------------------------------

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Vectors of ``texts`` (document side), in order; any iterable of strings, read once.

        Checked as a whole first, so that a bad text is named by its position in ``texts`` rather
        than in one of LlamaIndex's batches, and a lone string is refused instead of being embedded
        character by character.
        """
        checked = validate_texts(texts, what=_TEXTS)
        return super().get_text_embedding_batch(checked, show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """:meth:`get_text_embedding_batch` without blocking the event loop."""
        checked = validate_texts(texts, what=_TEXTS)
        return await super().aget_text_embedding_batch(checked, show_progress, **kwargs)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.encoder.encode_with_prefix(texts, self.prefixes[1], what=_TEXTS).tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        vectors = await self.encoder.aencode_with_prefix(texts, self.prefixes[1], what=_TEXTS)
        return vectors.tolist()


def _some_queries(queries: Any) -> list[str]:
    """``queries`` checked as a list of at least one query: the mean of no vectors is not a vector."""
    checked = validate_texts(queries, what="queries")
    if not checked:
        raise ValueError("queries must hold at least one query: there is nothing to aggregate")
    return checked


class QZhouRerank(RerankOptions, RerankerOptions, BaseNodePostprocessor):  # type: ignore[misc,valid-type]
    """Reranks retrieved nodes with any reranker of the core: an embedding model, a cross-encoder, an LLM.

    ``model`` names the reranker and its kind is read from the checkpoint (or given as ``kind=``):
    an embedding model scores the cosine of the instructed query and each node, on the very encoder
    a ``QZhouEmbedding`` of the same model uses (no second copy of the weights); a cross-encoder
    (ms-marco-MiniLM, bge-reranker) reads each pair together; an LLM reranker (Qwen3-Reranker) gives
    the probability that it answers "yes". Every :class:`~qzhou_plugins.RerankerConfig` field is an
    option; ``encoder=`` (for instance ``encoder=embed_model.encoder``) or ``reranker=`` (an existing
    :class:`~qzhou_plugins.rerank.Reranker`) can be passed instead.

    Each node is scored on its text as LlamaIndex embeds it (``MetadataMode.EMBED``), the nodes are
    sorted by decreasing score and at most ``top_n`` are kept (``None`` keeps all), none scoring
    strictly below ``score_threshold`` (as ``SimilarityPostprocessor(similarity_cutoff=...)`` cuts),
    which is on the reranker's own scale (:attr:`score_scale`): a threshold tuned for one kind of
    reranker means nothing for another.
    ``NodeWithScore.score`` becomes the reranker's score, where LlamaIndex reads scores (a
    ``SimilarityPostprocessor(similarity_cutoff=...)`` after it cuts on that scale), and the node's
    metadata says which scale it is on, ``relevance_score_scale``: ``"cosine"`` (-1 to 1),
    ``"probability"`` (0 to 1) or ``"logit"`` (unbounded); that key is kept out of what the LLM and
    the embedder read. The returned nodes are copies: the caller's nodes are not modified.

    ``instruction`` overrides the task's instruction (embedding and LLM rerankers; a cross-encoder
    takes none). A node with no text gets the lowest score of the scale rather than failing the query.
    """

    top_n: int | None = Field(default=5, ge=0, description="Nodes to keep after reranking; None: all.")
    task: str | Task | None = Field(
        default=TaskType.RERANKING.value,
        description="Task type, published task name or custom query instruction used for scoring.",
    )

    def __init__(self, **data: Any) -> None:
        data["task"] = _checked_task(data.get("task", TaskType.RERANKING.value))
        super().__init__(**data)

    @field_validator("top_n", mode="before")
    @classmethod
    def _top_n_is_a_count(cls, value: Any) -> int | None:
        return check_count(value, what="top_n")  # True is not 1 node

    @classmethod
    def class_name(cls) -> str:
        return "QZhouRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError(
                "QZhouRerank needs the query to rerank against: call postprocess_nodes(nodes, "
                "query_bundle=...) or postprocess_nodes(nodes, query_str=...)"
            )
        top_n = len(nodes) if self.top_n is None else self.top_n
        dispatcher.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=self.model)
        )
        payload = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model,
            EventPayload.QUERY_STR: query_bundle.query_str,
            EventPayload.TOP_K: top_n,
        }
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            texts = [node.node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
            ranked = self.ranked(query_bundle.query_str, texts)
            scale = self.reranker.score_scale
            reranked = [
                NodeWithScore(node=_with_scale(nodes[c.index].node, scale), score=c.score) for c in ranked
            ]
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked


SCALE_KEY = "relevance_score_scale"
"""The node metadata key that says which scale ``NodeWithScore.score`` is on after a rerank."""


def _with_scale(node: BaseNode, scale: str) -> BaseNode:
    """A copy of ``node`` whose metadata names the score's scale, hidden from the LLM and the embedder."""
    return node.model_copy(
        update={
            "metadata": {**node.metadata, SCALE_KEY: scale},
            "excluded_llm_metadata_keys": _plus(node.excluded_llm_metadata_keys, SCALE_KEY),
            "excluded_embed_metadata_keys": _plus(node.excluded_embed_metadata_keys, SCALE_KEY),
        }
    )


def _plus(keys: list[str], key: str) -> list[str]:
    return keys if key in keys else [*keys, key]
