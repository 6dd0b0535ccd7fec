"""The options every framework adapter accepts, made once from :class:`~qzhou_plugins.EncoderConfig`.

LangChain and LlamaIndex components are both pydantic v2 models (``llama_index.core.bridge.pydantic``
is pydantic itself), so one mixin serves both. Its fields are copied from ``EncoderConfig.model_fields``
(type, constraints, default, description), never written out again: a field added to the core config
appears in every adapter with its default and meaning, and the two adapters cannot drift apart. The
values are validated by ``EncoderConfig`` itself, so ``model=Path(...)``, ``device="auto"`` and a bool
``max_length`` get exactly the core's answer.

Each component is constructed either with these options (the process-wide shared encoder for them
is attached: one copy of the weights however many components use it) or with ``encoder=`` (an
existing :class:`~qzhou_plugins.encoder.Encoder`, whose settings the fields then mirror; an option
that contradicts it is refused). The encoder is a private attribute: serialising a component
serialises its settings only, and pickling reattaches to the shared encoder instead of copying the
weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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

from ..config import EncoderConfig
from ..encoder import Encoder
from ..instructions import check_instruction

__all__ = ["ENCODER_OPTIONS", "EncoderOptions", "InstructionOptions"]

ENCODER_OPTIONS: tuple[str, ...] = tuple(EncoderConfig.model_fields)
"""Every option that decides how the encoder is built: the fields of :class:`EncoderConfig`."""


def _is_default(name: str, value: Any) -> bool:
    default = EncoderConfig.model_fields[name].default
    return value is default or (type(value) is type(default) and value == default)


def config_from(values: Mapping[str, Any]) -> EncoderConfig:
    """The core configuration of ``values`` (option name -> value), validated by ``EncoderConfig``.

    Values equal to their default are left out, so the configuration records what was really asked
    for: a component restored from ``to_dict()`` or a pickle (which carry every field) gives the
    same configuration, and the same shared encoder, as the one that was saved.
    """
    return EncoderConfig(**{name: value for name, value in values.items() if not _is_default(name, value)})


def _config_of(encoder: Any, given: Mapping[str, Any], owner: str) -> EncoderConfig:
    """The configuration of an existing ``encoder``, refusing options given beside it that contradict it."""
    if not isinstance(encoder, Encoder):
        raise TypeError(f"{owner}(encoder=...) takes a qzhou_plugins Encoder, not {type(encoder).__name__}")
    own = encoder.config
    asked = config_from(given)
    clashes = [name for name in given if getattr(asked, name) != getattr(own, name)]
    if clashes:
        detail = ", ".join(
            f"{name}={given[name]!r} (the encoder has {getattr(own, name)!r})" for name in clashes
        )
        raise ValueError(
            f"{owner}: settings contradict the encoder passed in: {detail}. Pass either encoder= or the "
            f"options to load one: the encoder already decides {', '.join(sorted(given))}"
        )
    return own


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


class _EncoderAttachment(BaseModel):
    """Attaches the encoder: the behaviour of :class:`EncoderOptions`, whose fields are added below."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    _synonyms: ClassVar[dict[str, str]] = {}
    """A framework's own field that names an option (LlamaIndex's ``model_name`` is ``model``)."""

    _encoder: Encoder | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _attach_encoder(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if not isinstance(data, Mapping):  # an instance being revalidated keeps its encoder
            return handler(data)
        data = dict(data)  # the caller's mapping is never modified
        owner = cls.__name__
        encoder = data.pop("encoder", None)
        for synonym, option in cls._synonyms.items():
            _merge_synonym(data, synonym, option, owner)
        given = {name: data[name] for name in ENCODER_OPTIONS if name in data}
        config = config_from(given) if encoder is None else _config_of(encoder, given, owner)
        data.update({name: getattr(config, name) for name in ENCODER_OPTIONS})
        for synonym, option in cls._synonyms.items():
            data[synonym] = data[option]
        instance = handler(data)  # every other field is validated before any weights are loaded
        instance._encoder = encoder if encoder is not None else Encoder.shared(config)
        return instance

    @property
    def encoder(self) -> Encoder:
        """The core encoder: pass it to other components so that they use the same weights."""
        if self._encoder is None:  # only a component made with model_construct() has none
            raise RuntimeError(f"this {type(self).__name__} has no encoder: construct it normally")
        return self._encoder

    def encoder_config(self) -> EncoderConfig:
        """The core configuration these settings describe."""
        return config_from({name: getattr(self, name) for name in ENCODER_OPTIONS})

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only; unpickling reattaches to the shared encoder.

        LlamaIndex's ``__getstate__`` test-pickles every private attribute, which for the encoder
        would serialise the whole model in memory (15 GB for QZhou) only to drop it; worker processes
        (``IngestionPipeline(num_workers=...)``) pickle transformations.
        """
        private = self.__pydantic_private__ or {}
        encoder = private.pop("_encoder", None)
        try:
            state = super().__getstate__()
            state = {**state, "__pydantic_private__": dict(state.get("__pydantic_private__") or {})}
        finally:
            if encoder is not None:
                private["_encoder"] = encoder
        return state

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        """A deep copy of the settings that shares the encoder: the weights are never copied."""
        memo = {} if memo is None else memo
        memo[id(self._encoder)] = self._encoder
        return super().__deepcopy__(memo)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # LlamaIndex re-runs __init__ (which attaches); pydantic does not
        if (self.__pydantic_private__ or {}).get("_encoder") is None:
            self._encoder = Encoder.shared(self.encoder_config())


def _option_fields() -> dict[str, Any]:
    """Each ``EncoderConfig`` field as it is there, frozen.

    Frozen because these settings decide the loaded model: changing one after construction would
    leave the component describing a model it does not use.
    """
    return {
        name: (source.annotation, FieldInfo.merge_field_infos(source, frozen=True))
        for name, source in EncoderConfig.model_fields.items()
    }


EncoderOptions: type[_EncoderAttachment] = create_model(  # type: ignore[call-overload]
    "EncoderOptions",
    __base__=_EncoderAttachment,
    __module__=__name__,
    __doc__="Every ``EncoderConfig`` field as a frozen option, plus ``encoder=``; see the module docs.",
    **_option_fields(),
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
