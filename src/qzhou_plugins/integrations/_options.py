"""The options every framework adapter accepts, made once from the core's configurations.

LangChain and LlamaIndex components are both pydantic v2 models (``llama_index.core.bridge.pydantic``
is pydantic itself), so one mixin serves both. Its fields are copied from ``EncoderConfig.model_fields``
(:class:`EncoderOptions`: the embedders) or ``RerankerConfig.model_fields`` (:class:`RerankerOptions`:
the rerankers, which add ``kind``, ``label``, ``activation`` and ``template``), with type,
constraints, default and description, never written out again: a field added to the core config
appears in every adapter with its default and meaning, and the two adapters cannot drift apart. The
values are validated by the core configuration itself, so ``model=Path(...)``, ``device="auto"`` and
a bool ``max_length`` get exactly the core's answer.

Each component is constructed either with these options (the process-wide shared encoder or
reranker for them is attached: one copy of the weights however many components use it; an embedding
reranker runs on the very encoder of the embedders of its model) or with an existing runtime
(``encoder=`` an :class:`~qzhou_plugins.encoder.Encoder`; for a reranker also ``reranker=`` a
:class:`~qzhou_plugins.rerank.Reranker`), whose settings the fields then mirror; an option that
contradicts it is refused. Both mixins differ only in what they attach (:class:`_Runtime`). The
runtime is a private attribute: serialising a component serialises its settings only, and pickling
reattaches to the shared runtime instead of copying the weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from ..config import EncoderConfig, RerankerConfig
from ..encoder import Encoder
from ..instructions import check_instruction
from ..rerank import RankedCandidate, rerank
from ..rerank.reranker import Reranker
from ..validation import check_score

__all__ = [
    "ENCODER_OPTIONS",
    "RERANKER_OPTIONS",
    "EncoderOptions",
    "InstructionOptions",
    "RerankOptions",
    "RerankerOptions",
]

ENCODER_OPTIONS: tuple[str, ...] = tuple(EncoderConfig.model_fields)
"""Every option that decides how the encoder is built: the fields of :class:`EncoderConfig`."""

RERANKER_OPTIONS: tuple[str, ...] = tuple(RerankerConfig.model_fields)
"""Every option that decides how a reranker is built: the encoder's and kind, label, activation, template."""


def _is_default(config_type: type[EncoderConfig], name: str, value: Any) -> bool:
    default = config_type.model_fields[name].default
    return value is default or (type(value) is type(default) and value == default)


def config_from(values: Mapping[str, Any], config_type: type[EncoderConfig] = EncoderConfig) -> Any:
    """The core configuration of ``values`` (option name -> value), validated by ``config_type``.

    Values equal to their default are left out, so the configuration records what was really asked
    for: a component restored from ``to_dict()`` or a pickle (which carry every field) gives the
    same configuration, and the same shared encoder or reranker, as the one that was saved.
    """
    return config_type(
        **{name: value for name, value in values.items() if not _is_default(config_type, name, value)}
    )


def _check_agrees(own: EncoderConfig, given: Mapping[str, Any], owner: str, what: str) -> None:
    """Refuse options given beside an existing encoder or reranker that contradict its settings."""
    asked = config_from(given, type(own))
    clashes = [name for name in given if getattr(asked, name) != getattr(own, name)]
    if clashes:
        detail = ", ".join(
            f"{name}={given[name]!r} (the {what} has {getattr(own, name)!r})" for name in clashes
        )
        raise ValueError(
            f"{owner}: settings contradict the {what} passed in: {detail}. Pass either {what}= or the "
            f"options to load one: the {what} already decides {', '.join(sorted(given))}"
        )


def _as_text(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _merge_synonym(data: dict[str, Any], synonym: str, option: str, owner: str) -> None:
    """Move ``synonym`` (a framework's own name of ``option``) onto ``option``; they must agree."""
    value = data.pop(synonym, None)
    if not value:  # a framework default such as "" or None means "not given"
        return
    if data.get(option) is not None and _as_text(data[option]) != _as_text(value):
        raise ValueError(
            f"{owner}: {option}={data[option]!r} and {synonym}={value!r} disagree: they name the same "
            "thing, pass one of them"
        )
    data.setdefault(option, value)


@dataclass(frozen=True)
class _Runtime:
    """What a kind of component attaches: the one thing that differs between the two mixins.

    ``shared`` gives the process-wide runtime of a configuration; ``adopt`` takes the runtime a caller
    passed in (``encoder=``, ``reranker=``: popped from the data) and returns it with its
    configuration and the argument's name, or None when none was passed.
    """

    config_type: type[EncoderConfig]
    shared: Callable[[Any], Any]
    adopt: Callable[[dict[str, Any], str], tuple[Any, EncoderConfig, str] | None]

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(self.config_type.model_fields)


def _adopt_encoder(data: dict[str, Any], owner: str) -> tuple[Any, EncoderConfig, str] | None:
    encoder = data.pop("encoder", None)
    if encoder is None:
        return None
    if not isinstance(encoder, Encoder):
        raise TypeError(f"{owner}(encoder=...) takes a qzhou_plugins Encoder, not {type(encoder).__name__}")
    return encoder, encoder.config, "encoder"


def _adopt_reranker(data: dict[str, Any], owner: str) -> tuple[Any, EncoderConfig, str] | None:
    """``reranker=`` as it is, or ``encoder=`` as its embedding reranker (sharing its weights)."""
    reranker, encoder = data.pop("reranker", None), _adopt_encoder(data, owner)
    if reranker is not None and encoder is not None:
        raise TypeError(f"{owner}: pass reranker= or encoder=, not both")
    if encoder is not None:
        reranker = Reranker.of_encoder(encoder[0])
        return reranker, reranker.config, "encoder"
    if reranker is None:
        return None
    if not isinstance(reranker, Reranker):
        raise TypeError(
            f"{owner}(reranker=...) takes a qzhou_plugins Reranker, not {type(reranker).__name__}"
        )
    return reranker, reranker.config, "reranker"


_ENCODER = _Runtime(EncoderConfig, Encoder.shared, _adopt_encoder)
_RERANKER = _Runtime(RerankerConfig, Reranker.shared, _adopt_reranker)


class _Attachment(BaseModel):
    """Attaches the runtime (an encoder or a reranker) from the option fields, which are added below."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    _synonyms: ClassVar[dict[str, str]] = {}
    """A framework's own field that names an option (LlamaIndex's ``model_name`` is ``model``)."""
    _runtime_kind: ClassVar[_Runtime] = _ENCODER

    _runtime: Any = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _attach_runtime(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if not isinstance(data, Mapping):  # an instance being revalidated keeps its runtime
            return handler(data)
        data = dict(data)  # the caller's mapping is never modified
        owner, kind = cls.__name__, cls._runtime_kind
        adopted = kind.adopt(data, owner)
        for synonym, option in cls._synonyms.items():
            _merge_synonym(data, synonym, option, owner)
        given = {name: data[name] for name in kind.options if name in data}
        if adopted is None:
            config = config_from(given, kind.config_type)
        else:
            config = adopted[1]
            _check_agrees(config, given, owner, adopted[2])
        data.update({name: getattr(config, name) for name in kind.options})
        for synonym, option in cls._synonyms.items():
            data[synonym] = data[option]
        instance = handler(data)  # every other field is validated before any weights are loaded
        instance._runtime = kind.shared(config) if adopted is None else adopted[0]
        return instance

    def _attached(self) -> Any:
        if self._runtime is None:  # only a component made with model_construct() has none
            raise RuntimeError(f"this {type(self).__name__} has nothing attached: construct it normally")
        return self._runtime

    def _settings(self) -> Any:
        kind = self._runtime_kind
        return config_from({name: getattr(self, name) for name in kind.options}, kind.config_type)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only; unpickling reattaches to the shared encoder or reranker.

        LlamaIndex's ``__getstate__`` test-pickles every private attribute, which for the encoder
        would serialise the whole model in memory (15 GB for QZhou) only to drop it; worker processes
        (``IngestionPipeline(num_workers=...)``) pickle transformations.
        """
        private = self.__pydantic_private__ or {}
        runtime = private.pop("_runtime", None)
        try:
            state = super().__getstate__()
            state = {**state, "__pydantic_private__": dict(state.get("__pydantic_private__") or {})}
        finally:
            if runtime is not None:
                private["_runtime"] = runtime
        return state

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        """A deep copy of the settings that shares the runtime: the weights are never copied."""
        memo = {} if memo is None else memo
        memo[id(self._runtime)] = self._runtime
        return super().__deepcopy__(memo)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # LlamaIndex re-runs __init__ (which attaches); pydantic does not
        if (self.__pydantic_private__ or {}).get("_runtime") is None:
            self._runtime = self._runtime_kind.shared(self._settings())


class _EncoderAttachment(_Attachment):
    """Attaches the encoder: the behaviour of :class:`EncoderOptions`."""

    @property
    def encoder(self) -> Encoder:
        """The core encoder: pass it to other components so that they use the same weights."""
        return self._attached()  # type: ignore[no-any-return]

    def encoder_config(self) -> EncoderConfig:
        """The core configuration these settings describe."""
        return self._settings()  # type: ignore[no-any-return]


class _RerankerAttachment(_Attachment):
    """Attaches the reranker: the behaviour of :class:`RerankerOptions`.

    Constructed with the options (``Reranker.shared`` of them: an embedding model's reranker shares
    the very encoder of every embedder of the same options), with ``reranker=`` (an existing
    :class:`~qzhou_plugins.rerank.Reranker`) or with ``encoder=`` (its embedding reranker).
    """

    _runtime_kind: ClassVar[_Runtime] = _RERANKER

    @property
    def reranker(self) -> Reranker:
        """The core reranker (:class:`~qzhou_plugins.rerank.Reranker`) that scores every call."""
        return self._attached()  # type: ignore[no-any-return]

    @property
    def encoder(self) -> Encoder:
        """The encoder of an embedding reranker: pass it to an embedder to share the weights."""
        reranker = self._attached()
        if reranker.encoder is None:
            raise AttributeError(
                f"{reranker.config.model!r} is a {reranker.kind} reranker: it has no encoder (only an "
                "embedding reranker does); use .reranker"
            )
        return reranker.encoder  # type: ignore[no-any-return]

    @property
    def score_scale(self) -> str:
        """``cosine``, ``probability`` or ``logit``: what a score and ``score_threshold`` mean."""
        return self._attached().score_scale  # type: ignore[no-any-return]

    def reranker_config(self) -> RerankerConfig:
        """The core configuration these settings describe."""
        return self._settings()  # type: ignore[no-any-return]


def _option_fields(config_type: type[EncoderConfig]) -> dict[str, Any]:
    """Each field of ``config_type`` as it is there, frozen.

    Frozen because these settings decide the loaded model: changing one after construction would
    leave the component describing a model it does not use.
    """
    return {
        name: (source.annotation, FieldInfo.merge_field_infos(source, frozen=True))
        for name, source in config_type.model_fields.items()
    }


EncoderOptions: type[_EncoderAttachment] = create_model(  # type: ignore[call-overload]
    "EncoderOptions",
    __base__=_EncoderAttachment,
    __module__=__name__,
    __doc__="Every ``EncoderConfig`` field as a frozen option, plus ``encoder=``; see the module docs.",
    **_option_fields(EncoderConfig),
)

RerankerOptions: type[_RerankerAttachment] = create_model(  # type: ignore[call-overload]
    "RerankerOptions",
    __base__=_RerankerAttachment,
    __module__=__name__,
    __doc__="Every ``RerankerConfig`` field as a frozen option, plus ``reranker=`` or ``encoder=``.",
    **_option_fields(RerankerConfig),
)


class InstructionOptions(BaseModel):
    """Explicit per-side instructions, which override the task on their side.

    ``None`` leaves a side to the task, ``""`` means no instruction there. The rule itself is the
    core's (:meth:`Encoder.prefixes`); here a value is only checked to be an instruction at all, so
    that ``5`` or ``b"..."`` is refused instead of becoming text.
    """

    query_instruction: str | None = Field(
        default=None, description="Instruction for queries in place of the task's; '' for none."
    )
    document_instruction: str | None = Field(
        default=None, description="Instruction for documents in place of the task's; '' for none."
    )

    @field_validator("query_instruction", "document_instruction", mode="before")
    @classmethod
    def _is_an_instruction(cls, value: Any, info: ValidationInfo) -> str | None:
        return check_instruction(value, what=info.field_name)


class RerankOptions(BaseModel):
    """What a framework reranker takes besides its reranker, the same in LangChain and LlamaIndex: a
    cut on the reranker's own scale and an instruction in place of the task's; and the one call that
    ranks with them. The component also has ``reranker`` (:class:`RerankerOptions`), ``top_n`` and
    ``task`` (its framework's own defaults and checks).
    """

    score_threshold: float | None = Field(
        default=None,
        description="Drop what scores strictly below this, on the reranker's scale (see score_scale); "
        "None: keep all.",
    )
    instruction: str | None = Field(
        default=None, description="Instruction in place of the task's (embedding and LLM rerankers)."
    )

    @field_validator("score_threshold", mode="before")
    @classmethod
    def _threshold_is_finite(cls, value: Any) -> float | None:
        return check_score(value, what="score_threshold")  # NaN would silently drop everything

    @field_validator("instruction", mode="before")
    @classmethod
    def _is_an_instruction(cls, value: Any) -> str | None:
        return check_instruction(value, what="instruction")

    def ranked(self, query: str, texts: list[str]) -> list[RankedCandidate]:
        """``texts`` best first against ``query``: at most ``top_n``, none strictly below
        ``score_threshold``; a blank text gets the scale's floor instead of failing the chain."""
        component: Any = self
        return rerank(
            component.reranker,
            query,
            texts,
            top_n=component.top_n,
            threshold=self.score_threshold,
            task=component.task,
            instruction=self.instruction,
            empty="lowest",
        )
