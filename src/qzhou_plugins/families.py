"""Model families: what it takes to run one kind of embedder correctly, as data.

Embedders built on the same weights differ in ways that never fail loudly: attention (causal or
bidirectional), pooling (last token, mean, CLS), padding side, whether an end token must close every
text, the instruction template and which side of which task carries it, and whether a vector may be
cut short (Matryoshka). Getting one wrong gives plausible, quietly worse vectors. So each family is
one record in ``data/model_families.json``, chosen from the checkpoint (architecture, model type,
sentence-transformers files, name) or named by the caller, and recorded with every fingerprint; the
code reads the record and never tests a model's name anywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .instructions import PromptStyle, family_records, task_type_table

__all__ = [
    "Checkpoint",
    "FamilyMatch",
    "ModelFamily",
    "UnknownFamilyError",
    "choose_family",
    "family_by_name",
    "family_named",
    "known_families",
]

Backbone = Literal["decoder", "encoder"]


class UnknownFamilyError(ValueError):
    """A family name that no record has."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint's files say that a family is recognised by."""

    architectures: tuple[str, ...]
    model_type: str
    backbone: Backbone
    names: tuple[str, ...]
    """The model name as given, its folder's name and config.json's ``_name_or_path``."""
    sentence_transformers_pooling: str | None


class FamilyMatch(BaseModel):
    """One way to recognise a family: every condition given must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architectures: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    sentence_transformers_pooling: str | None = None
    backbone: Backbone | None = None

    def holds(self, checkpoint: Checkpoint) -> bool:
        names = [name.lower() for name in checkpoint.names]
        return (
            (not self.architectures or bool(set(self.architectures) & set(checkpoint.architectures)))
            and (not self.model_types or checkpoint.model_type in self.model_types)
            and (not self.names or any(part in name for part in self.names for name in names))
            and (
                self.sentence_transformers_pooling is None
                or self.sentence_transformers_pooling == checkpoint.sentence_transformers_pooling
            )
            and (self.backbone is None or self.backbone == checkpoint.backbone)
        )


class ModelFamily(BaseModel):
    """One family's record (see ``data/model_families.json`` and docs/models.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    sources: tuple[str, ...]
    match: tuple[FamilyMatch, ...]
    backbone: Backbone
    attention: Literal["causal", "bidirectional"]
    pooling: Literal["mean", "cls", "last", "max"]
    padding_side: Literal["left", "right"]
    end_token: bool
    """Whether every text must end with the tokenizer's end token (the one last-token pooling reads):
    appended when the tokenizer does not add it itself."""
    template: str
    instructed: bool
    """Trained with task instructions: task types and published task names give instructions."""
    task_types: dict[str, dict[str, object]] = Field(default_factory=dict)
    published_tasks: str | None = None
    matryoshka_min: int | None = None
    """The smallest trained Matryoshka size (None: the vector may not be cut)."""
    default_max_length: int | None = None

    @field_validator("template")
    @classmethod
    def _template_has_its_field(cls, value: str) -> str:
        """A record whose template has no ``{instruction}`` is refused when it is read, not when a
        text is first prefixed (PromptStyle holds the rule)."""
        return PromptStyle(template=value).template

    @property
    def bidirectional(self) -> bool:
        return self.attention == "bidirectional"

    def prompt_style(self, saved_prompts: dict[str, str] | None = None) -> PromptStyle:
        """How this family prefixes texts, with a checkpoint's own saved sentence-transformers prompts."""
        return PromptStyle(
            template=self.template,
            instructed_by_default=self.instructed,
            saved_prompts=dict(saved_prompts or {}),
            family=self.name,
            task_types=task_type_table(self.task_types) if self.instructed else {},
            published_tasks=self.published_tasks,
        )

    def check_dimensions(self, dimensions: int | None, width: int, model: str) -> int:
        """The vector length for ``dimensions`` (None: the model's ``width``), refused when this family
        was not trained for it: a cut vector nobody trained is a silently worse vector."""
        if dimensions is None or dimensions == width:
            return width
        if self.matryoshka_min is None:
            raise ValueError(
                f"dimensions={dimensions}: the {self.name} family was not trained to be cut short "
                f"(no Matryoshka sizes), so {model!r} only gives its full {width} dimensions; leave "
                "dimensions unset"
            )
        if not self.matryoshka_min <= dimensions <= width:
            raise ValueError(
                f"dimensions={dimensions} is outside the sizes {model!r} was trained for: from "
                f"{self.matryoshka_min} to {width} ({self.name} family)"
            )
        return dimensions


@cache
def known_families() -> dict[str, ModelFamily]:
    """Every family record by name, in the order they are tried."""
    return {name: ModelFamily(name=name, **record) for name, record in family_records().items()}


def family_named(name: str) -> ModelFamily:
    """The record of the family called ``name``; a clear error listing the known ones otherwise."""
    families = known_families()
    if name not in families:
        raise UnknownFamilyError(f"unknown model family {name!r}; known families: {', '.join(families)}")
    return families[name]


def choose_family(requested: str | None, checkpoint: Checkpoint, model: str) -> ModelFamily:
    """The caller's family if one is named (refused when it contradicts the checkpoint), else the
    first record that recognises ``checkpoint``."""
    if requested is not None:
        family = family_named(requested)
        if family.backbone != checkpoint.backbone:
            raise ValueError(
                f"family={requested!r} is for {family.backbone} checkpoints, but {model!r} is a "
                f"{checkpoint.model_type} {checkpoint.backbone}; leave family unset or name a "
                f"{checkpoint.backbone} family ({', '.join(_of_backbone(checkpoint.backbone))})"
            )
        return family
    for family in known_families().values():
        if any(alternative.holds(checkpoint) for alternative in family.match):
            return family
    raise UnknownFamilyError(f"no model family recognises {model!r}")  # the generic records match all


def family_by_name(model: str) -> ModelFamily | None:
    """The family a model's name alone says (``Qwen/Qwen3-Embedding-8B``), or None: what a client
    knows of a model served by a server that does not say its family (vLLM, text-embeddings-inference).

    Only the records' ``names`` conditions are read, nothing else of a checkpoint being known: a
    record recognised by its architecture or files alone is never guessed from a name.
    """
    name = model.lower()
    for family in known_families().values():
        if any(part in name for alternative in family.match for part in alternative.names):
            return family
    return None


def _of_backbone(backbone: str) -> Sequence[str]:
    return [name for name, family in known_families().items() if family.backbone == backbone]
