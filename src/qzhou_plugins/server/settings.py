"""What one server process serves, and the limits it keeps.

One frozen, validated object, built by the command line (:mod:`.options`) or by a caller that mounts
:func:`~qzhou_plugins.server.create_app` itself, so that every way of starting the server checks the
same things and the app never reads ``argparse`` results or the environment on its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import DEFAULT_MODEL, DType, EncoderConfig, RerankerConfig, StrictCount

QUERY_SUFFIX = "-query"
"""The served alias ``NAME-query`` embeds on the query side, for clients that cannot send
``input_type`` (LangChain's and LlamaIndex's OpenAI classes send only ``model`` and ``input``)."""

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class ServerSettings(BaseModel):
    """The model to serve, where to listen, and the limits that keep one client from starving others."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default=DEFAULT_MODEL, description="Local folder or hub id of the checkpoint.")
    served_name: str | None = Field(
        default=None, description="Name clients send as `model`; None: the model as given."
    )
    rerank_model: str | None = Field(
        default=None,
        description="A reranker (cross-encoder or LLM reranker; its kind read from the checkpoint) served "
        "on /v1/rerank beside the embedder; None: the embedder reranks.",
    )
    rerank_served_name: str | None = Field(
        default=None, description="Name clients send as `model` for the reranker; None: rerank_model."
    )
    host: str = Field(default="127.0.0.1", description="Loopback by default: expose it on purpose.")
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: str | None = Field(default=None, description="Bearer key the /v1 routes require; None: open.")
    device: str | None = None
    dtype: DType = "auto"
    max_length: StrictCount | None = Field(default=None, gt=0)
    rerank_max_length: StrictCount | None = Field(
        default=None, gt=0, description="Tokens per (query, document) pair of the reranker; None: its own."
    )
    family: str | None = Field(
        default=None, description="The model family; None: recognised from the checkpoint."
    )
    dimensions: StrictCount | None = Field(
        default=None, gt=0, description="Matryoshka size of every vector served; None: the full vector."
    )
    max_batch_tokens: StrictCount | None = Field(
        default=None, gt=0, description="Token budget of one forward pass and of one coalesced batch."
    )
    max_queue: StrictCount = Field(
        default=8192, gt=0, description="Texts that may wait for the encoder before requests get 503."
    )
    max_inputs: StrictCount = Field(default=2048, gt=0, description="Texts in one request (OpenAI: 2048).")
    max_request_tokens: StrictCount = Field(
        default=300_000, gt=0, description="Tokens in one request, instructions included (OpenAI: 300k)."
    )
    max_body_bytes: StrictCount = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description="Bytes of one request body, refused before it is read (Content-Length) or parsed.",
    )
    batch_wait_ms: float = Field(
        default=2.0, ge=0, le=1000, description="How long the first waiting request may wait for company."
    )
    batching: bool = Field(default=True, description="False: one encode call per request (a baseline).")
    log_level: LogLevel = "info"
    access_log: bool = False

    @field_validator("api_key", "served_name", "rerank_model", "rerank_served_name")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty or whitespace-only")
        return value

    @model_validator(mode="after")
    def _names_apart(self) -> ServerSettings:
        for option in ("rerank_served_name", "rerank_max_length"):
            if getattr(self, option) is not None and self.rerank_model is None:
                raise ValueError(f"{option} sets the reranker, but no rerank_model is served")
        if self.rerank_name is not None and self.rerank_name in (self.name, self.query_name):
            raise ValueError(
                f"the reranker's name {self.rerank_name!r} is also the embedder's: give the reranker "
                "another name (--rerank-served-name), so that `model` says which one a request means"
            )
        return self

    @property
    def name(self) -> str:
        """The document-side model name clients send (``served_name``, else the model as given)."""
        return self.served_name or self.model

    @property
    def query_name(self) -> str:
        """The query-side alias of :attr:`name`."""
        return self.name + QUERY_SUFFIX

    @property
    def rerank_name(self) -> str | None:
        """The name clients send for the served reranker (None when none is served)."""
        return self.rerank_served_name or self.rerank_model

    def encoder_config(self) -> EncoderConfig:
        """The one encoder this server loads; the batch budget only when given (else the core's)."""
        options: dict[str, object] = {"model": self.model, "device": self.device, "dtype": self.dtype}
        for name in ("max_length", "family", "dimensions"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        if self.max_batch_tokens is not None:
            options["batch_tokens"] = self.max_batch_tokens
        return EncoderConfig(**options)  # type: ignore[arg-type]

    def reranker_config(self) -> RerankerConfig | None:
        """The reranker served beside the encoder (on the same device and dtype), or None."""
        if self.rerank_model is None:
            return None
        options: dict[str, object] = {"model": self.rerank_model, "device": self.device, "dtype": self.dtype}
        if self.max_batch_tokens is not None:
            options["batch_tokens"] = self.max_batch_tokens
        if self.rerank_max_length is not None:  # --max-length is the embedder's, per text
            options["max_length"] = self.rerank_max_length
        return RerankerConfig(**options)  # type: ignore[arg-type]
