"""LlamaIndex adapter: an embedding model and a node postprocessor on the shared core.

``QZhouEmbedding`` keeps the two sides apart the way LlamaIndex names them: the query methods embed
what a retriever searches with (instructed), the text methods embed what an index stores (instructed
only for symmetric tasks). Its ``embed_batch_size`` is as large as LlamaIndex allows, so a whole
ingestion batch reaches the core, which sorts by length and fills batches by tokens itself; small
count-based batches in document order would mostly compute padding.

``QZhouRerank`` reranks retrieved nodes with the embedding model already in memory (a bi-encoder
cosine), so a query engine needs no second, cross-encoder model.

Both keep only the settings as pydantic fields; the loaded :class:`~qzhou_plugins.encoder.Encoder`
is a private attribute, so ``to_dict``/``from_dict`` serialise the settings and a restored object
reattaches to the process-wide shared encoder instead of loading the weights again.
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import BaseModel, ConfigDict, Field, PrivateAttr
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "qzhou_plugins.llama_index needs llama-index-core: pip install 'qzhou-plugins[llama-index]'"
    ) from error

from ..config import AttentionImplementation, DType, EncoderConfig, Pooling
from ..encoder import Encoder
from ..validation import validate_texts
from ..instructions import Task, TaskLike, TaskType
from ..rerank import score_candidates

__all__ = ["QZhouEmbedding", "QZhouRerank"]

dispatcher = get_dispatcher(__name__)

MAX_EMBED_BATCH_SIZE = 2048
"""The largest ``embed_batch_size`` LlamaIndex accepts, and its default insert batch of a vector index."""

_CONFIG_FIELDS = EncoderConfig.model_fields


def _encoder_field(name: str) -> Any:
    """A field with the default and description of :class:`EncoderConfig`, so the two cannot drift.

    It is frozen: these settings decide the loaded model, and changing one after construction would
    leave the object describing a model it does not use.
    """
    source = _CONFIG_FIELDS[name]
    return Field(default=source.default, description=source.description, frozen=True)


class EncoderSettings(BaseModel):
    """The :class:`EncoderConfig` fields, as serialisable settings of a LlamaIndex component."""

    model_config = ConfigDict(protected_namespaces=())

    model: str = _encoder_field("model")
    device: str | None = _encoder_field("device")
    dtype: DType = _encoder_field("dtype")
    max_length: int | None = _encoder_field("max_length")
    batch_tokens: int = _encoder_field("batch_tokens")
    normalize: bool = _encoder_field("normalize")
    pooling: Pooling | None = _encoder_field("pooling")
    attn_implementation: AttentionImplementation = _encoder_field("attn_implementation")
    bidirectional: bool | None = _encoder_field("bidirectional")
    show_progress: bool | None = _encoder_field("show_progress")

    _encoder: Encoder = PrivateAttr()

    @property
    def encoder(self) -> Encoder:
        """The shared core encoder: pass it to other adapters so they use the same weights."""
        return self._encoder

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only (as ``to_dict`` does); unpickling reattaches to the shared encoder.

        LlamaIndex's own ``__getstate__`` test-pickles every private attribute, which for the encoder
        would serialise the whole model in memory (15 GB for QZhou) only to drop it; worker
        processes (``IngestionPipeline(num_workers=...)``) pickle transformations.
        """
        private = self.__pydantic_private__ or {}
        encoder = private.pop("_encoder", None)
        try:
            state = super().__getstate__()  # type: ignore[misc]
            state = {**state, "__pydantic_private__": dict(state.get("__pydantic_private__") or {})}
        finally:
            if encoder is not None:
                private["_encoder"] = encoder
        return state

    def encoder_config(self) -> EncoderConfig:
        """The core configuration these settings describe."""
        return EncoderConfig(**{name: getattr(self, name) for name in _CONFIG_FIELDS})

    @staticmethod
    def _settings_of(encoder: Encoder, data: dict[str, Any], owner: str) -> dict[str, Any]:
        """``data`` completed with the configuration of an existing encoder, refusing contradictions."""
        if not isinstance(encoder, Encoder):
            kind = type(encoder).__name__
            raise TypeError(f"{owner}(encoder=...) takes a qzhou_plugins Encoder, not {kind}")
        given = encoder.config.model_dump()
        clashes = [name for name in _CONFIG_FIELDS if name in data and data[name] != given[name]]
        if clashes:
            detail = ", ".join(f"{name}={data[name]!r} (encoder has {given[name]!r})" for name in clashes)
            raise ValueError(f"{owner}: settings contradict the encoder passed in: {detail}")
        return {**data, **given}


def _plain_task(task: TaskLike) -> str | Task | None:
    """A TaskType member as its plain value, so that it serialises as the string users write."""
    return task.value if isinstance(task, TaskType) else task


class QZhouEmbedding(EncoderSettings, BaseEmbedding):
    """QZhou-Embedding (or any model the core loads) as a LlamaIndex embedding model.

    ``task`` picks the instructions: a task type (``"retrieval"``, ``"sts"``, ...), a task name of
    the authors' published evaluation (``"FiQA2018"``) or a custom query instruction (a sentence).
    ``query_instruction`` / ``text_instruction`` override the task on their side with an explicit
    instruction in the model's format (``""`` means none); leave them ``None`` to follow the task.

    Construct it with ``model=`` (LlamaIndex's ``model_name`` is kept equal to it) or from a loaded
    ``encoder=``. Options that decide the loaded model are frozen after construction; ``task`` and
    the instructions are read at each call and may be changed.
    """

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
    query_instruction: str | None = Field(
        default=None, description="Explicit query-side instruction (overrides the task); '' for none."
    )
    text_instruction: str | None = Field(
        default=None, description="Explicit document-side instruction (overrides the task); '' for none."
    )

    def __init__(self, encoder: Encoder | None = None, **data: Any) -> None:
        model, model_name = data.get("model"), data.get("model_name")
        if model is not None and model_name and model_name != model:
            raise ValueError(
                f"model={model!r} and model_name={model_name!r} disagree: they name the same checkpoint, "
                "pass one of them"
            )
        if model is None and model_name:
            data["model"] = model_name
        if encoder is not None:
            data = self._settings_of(encoder, data, "QZhouEmbedding")
        data["model_name"] = data.get("model", _CONFIG_FIELDS["model"].default)
        data["task"] = _plain_task(data.get("task"))
        super().__init__(**data)
        if self.task is not None and self.query_instruction is not None and self.text_instruction is not None:
            raise ValueError(
                f"task={self.task!r} would be ignored: query_instruction and text_instruction are both set, "
                "and an explicit instruction overrides the task on its side"
            )
        self._encoder = encoder if encoder is not None else Encoder.shared(self.encoder_config())
        self._encoder.prefixes(self.task)  # an unknown task fails here, not at the first query

    @classmethod
    def class_name(cls) -> str:
        return "QZhouEmbedding"

    def to_payload(self) -> dict[str, Any]:
        """What instrumentation events report about this model: the base fields plus the task."""
        return {**super().to_payload(), "task": self.task, "batch_tokens": self.batch_tokens}

    # -- query side ---------------------------------------------------------------------------------

    def _get_query_embedding(self, query: str) -> Embedding:
        texts = validate_texts([query], what="query")
        if self.query_instruction is not None:
            vectors = self._encoder.encode(texts, self.query_instruction)
        else:
            vectors = self._encoder.encode_queries(texts, self.task)
        return vectors[0].tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        texts = validate_texts([query], what="query")
        if self.query_instruction is not None:
            vectors = await self._encoder.aencode(texts, self.query_instruction)
        else:
            vectors = await self._encoder.aencode_queries(texts, self.task)
        return vectors[0].tolist()

    # -- document side ------------------------------------------------------------------------------

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        checked = validate_texts(texts, what="texts to embed (node contents, MetadataMode.EMBED)")
        if self.text_instruction is not None:
            return self._encoder.encode(checked, self.text_instruction).tolist()
        return self._encoder.encode_documents(checked, self.task).tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        checked = validate_texts(texts, what="texts to embed (node contents, MetadataMode.EMBED)")
        if self.text_instruction is not None:
            return (await self._encoder.aencode(checked, self.text_instruction)).tolist()
        return (await self._encoder.aencode_documents(checked, self.task)).tolist()


class QZhouRerank(EncoderSettings, BaseNodePostprocessor):
    """Reranks retrieved nodes by cosine with the query, using the embedding model already loaded.

    Each node is scored on its text as LlamaIndex embeds it (``MetadataMode.EMBED``), the nodes are
    sorted by decreasing score, at most ``top_n`` are kept (``None`` keeps all), and each
    ``NodeWithScore.score`` becomes the new cosine. A node with no text gets the lowest score (-1)
    rather than failing the whole query. Construct it with ``model=`` or with ``encoder=`` (for
    instance ``encoder=embed_model.encoder``).
    """

    top_n: int | None = Field(default=5, ge=0, description="Nodes to keep after reranking; None: all.")
    task: str | Task | None = Field(
        default=TaskType.RERANKING.value,
        description="Task type, published task name or custom query instruction used for scoring.",
    )

    def __init__(self, encoder: Encoder | None = None, **data: Any) -> None:
        if encoder is not None:
            data = self._settings_of(encoder, data, "QZhouRerank")
        data["task"] = _plain_task(data.get("task", TaskType.RERANKING.value))
        super().__init__(**data)
        self._encoder = encoder if encoder is not None else Encoder.shared(self.encoder_config())
        self._encoder.prefixes(self.task)

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
            scores = score_candidates(
                self._encoder, query_bundle.query_str, texts, task=self.task, empty="lowest"
            )
            # A stable sort: equally scored nodes keep the retriever's order.
            order = sorted(range(len(nodes)), key=lambda i: -float(scores[i]))[:top_n]
            reranked = [NodeWithScore(node=nodes[i].node, score=float(scores[i])) for i in order]
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked
