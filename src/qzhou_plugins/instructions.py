"""Task instructions: which text goes before a query and before a document.

QZhou-Embedding was trained with an instruction in front of the query (and, for symmetric tasks, in
front of both texts). Getting the instruction or the side wrong does not fail: it silently lowers
quality. So a task is resolved once, here, into a :class:`Task` that says the instruction and the
sides, and every adapter asks this module instead of building strings itself.

A ``task`` argument anywhere in the package accepts:

- a task type (``"retrieval"``, ``"sts"``, ...), which has a default instruction and side rule;
- a task name from the authors' published evaluation (``"FiQA2018"``, ``"T2Retrieval"``, ...);
- a custom instruction: any string with a space in it (``"Given a legal question, retrieve ..."``),
  applied to the query side only; or a :class:`Task` for full control of both sides.
"""

from __future__ import annotations

import difflib
import json
from enum import Enum
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

QZHOU_INSTRUCTION_FORMAT = "Instruct: {instruction}\nQuery: "
"""The prompt format of the authors' evaluation code (with a space after ``Query:``)."""


class TaskType(str, Enum):
    """Kinds of work an embedding does; each decides a default instruction and its sides."""

    RETRIEVAL = "retrieval"
    RERANKING = "reranking"
    STS = "sts"
    PAIR_CLASSIFICATION = "pair_classification"
    CLASSIFICATION = "classification"
    CLUSTERING = "clustering"
    SUMMARIZATION = "summarization"
    BITEXT = "bitext"


class Task(BaseModel):
    """A resolved task: the instruction and whether documents carry it too.

    ``both_sides=False`` is the asymmetric case (a short query against long passages): only the query
    is instructed. ``both_sides=True`` is the symmetric case, where both texts are of one kind and
    must be embedded the same way for their similarity to mean anything.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Task type, published task name, or 'custom'.")
    instruction: str | None = Field(description="Instruction text; None means no instruction at all.")
    both_sides: bool = False

    @field_validator("instruction", mode="before")
    @classmethod
    def _instruction_is_text(cls, value: Any) -> str | None:
        return check_instruction(value)


def check_instruction(value: Any, *, what: str = "instruction") -> str | None:
    """An instruction as given by a user: a string or None; ``""`` means none, blank is refused.

    A number, a list or bytes would otherwise become text through ``str()`` and be embedded as an
    instruction; a whitespace-only one would be a prefix of nothing but spaces.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string or None, not {type(value).__name__} {value!r}")
    if value and not value.strip():
        raise ValueError(f"{what} must not be whitespace-only; use '' or None for no instruction")
    return value


TaskLike = str | TaskType | Task | None


@cache
def family_records() -> dict[str, Any]:
    """The model families' records as stored (``data/model_families.json``), by family name."""
    text = resources.files("qzhou_plugins").joinpath("data/model_families.json").read_text("utf-8")
    return {name: record for name, record in json.loads(text).items() if not name.startswith("_")}


def task_type_table(task_types: dict[str, Any]) -> dict[TaskType, Task]:
    """A family record's ``task_types`` as :class:`Task` values by :class:`TaskType`."""
    return {TaskType(name): Task(name=name, **fields) for name, fields in task_types.items()}


TASK_TYPE_DEFAULTS: dict[TaskType, Task] = task_type_table(family_records()["qzhou"]["task_types"])
"""QZhou's instruction and sides for each task type (its family record)."""


QZHOU_TASK_TABLE = "task_instructions.json"
"""The file (in ``data/``) of QZhou's published per-task instructions."""


@cache
def published_tasks(table: str = QZHOU_TASK_TABLE) -> dict[str, Task]:
    """A family's published per-task instructions by task name (QZhou's MTEB and C-MTEB evaluation
    by default), from the file ``table`` in ``data/``."""
    raw = json.loads(resources.files("qzhou_plugins").joinpath(f"data/{table}").read_text("utf-8"))
    both_sides = set(raw["both_sides"])
    tasks: dict[str, Task] = {}
    for benchmark in ("mteb_eng_v2", "cmteb_cmn_v1"):
        for name, instruction in raw[benchmark].items():
            tasks[name] = Task(name=name, instruction=instruction, both_sides=name in both_sides)
    return tasks


class UnknownTaskError(ValueError):
    """A task name that is neither a task type nor a published task."""


def resolve_task(task: TaskLike, style: PromptStyle | None = None) -> Task:
    """Turn any accepted ``task`` value into a :class:`Task`, with the tables of ``style``'s family
    (QZhou's when None).

    ``None`` means retrieval, the common RAG case. A string is tried as a task type, then as a
    published task name (exact, then ignoring case); a string containing white space is a custom
    query-side instruction. Anything else is an error that lists the close matches, because a typo
    in a task name would otherwise become a silently wrong instruction; so is a task type or a task
    name that the family publishes no instruction for.
    """
    if isinstance(task, Task):
        return task
    types = style.task_types if style is not None else TASK_TYPE_DEFAULTS
    name_table = QZHOU_TASK_TABLE if style is None else style.published_tasks
    table = published_tasks(name_table) if name_table else {}
    family = style.family if style is not None else "qzhou"
    if task is None or isinstance(task, TaskType):
        return _of_type(TaskType(task or TaskType.RETRIEVAL), types, family)
    if not isinstance(task, str):
        raise TypeError(f"task must be a string or a Task, not {type(task).__name__}")
    text = task.strip()
    if not text:
        raise UnknownTaskError("task must not be empty; use 'retrieval' or a Task(instruction=None)")
    kinds = {member.value: member for member in TaskType}
    if text.lower() in kinds:
        return _of_type(kinds[text.lower()], types, family)
    by_lower = {name.lower(): name for name in table}
    if text in table or text.lower() in by_lower:
        return table[text if text in table else by_lower[text.lower()]]
    if any(character.isspace() for character in text):
        return Task(name="custom", instruction=task)
    if not table and text.lower() in {name.lower() for name in published_tasks()}:
        raise UnknownTaskError(
            f"{task!r} is a task of QZhou's published table, but the {family} family publishes no per-task "
            "instructions here: pass the instruction itself (a sentence), or a task type "
            f"({', '.join(t.value for t in types)})"
        )
    raise UnknownTaskError(_unknown_task_message(task, list(kinds), table))


def _of_type(kind: TaskType, types: dict[TaskType, Task], family: str) -> Task:
    if kind not in types:
        raise UnknownTaskError(
            f"the {family} family has no instruction for the task type {kind.value!r} (its authors publish "
            f"one per dataset, or none): pass the instruction itself, e.g. task='Classify the given text "
            f"into its category', or one of its task types ({', '.join(t.value for t in types)})"
        )
    return types[kind]


def _unknown_task_message(task: str, kinds: list[str], table: dict[str, Task]) -> str:
    text = task.strip()
    by_lower = {name.lower(): name for name in table}
    close = difflib.get_close_matches(text, kinds + list(table), n=5, cutoff=0.6)
    close += [
        c
        for c in difflib.get_close_matches(text.lower(), by_lower, n=5, cutoff=0.6)
        if by_lower[c] not in close
    ]
    hint = f" Close matches: {', '.join(close)}." if close else ""
    return (
        f"Unknown task {task!r}.{hint} Use a task type ({', '.join(kinds)}), a published task name "
        "(see qzhou_plugins.instructions.published_tasks()), or a custom instruction sentence."
    )


class PromptStyle(BaseModel):
    """How a model family turns a task into the text placed before a query and a document.

    ``template`` formats an instruction (QZhou: ``Instruct: ...\nQuery: ``; Qwen3-Embedding the same
    with no space; others use the instruction as a literal prefix). ``instructed_by_default`` is True
    for families trained with task instructions: every task type the family knows (``task_types``)
    and every task of its published table (``published_tasks``, a file in ``data/``) applies. Other
    models were not trained with instructions, so they only get a prefix the caller wrote (a custom
    instruction or a :class:`Task`), else the model's own sentence-transformers prompts
    (``saved_prompts``), else nothing. Built from a family record by
    :meth:`qzhou_plugins.families.ModelFamily.prompt_style`.
    """

    model_config = ConfigDict(frozen=True)

    template: str = "{instruction}"
    instructed_by_default: bool = False
    saved_prompts: dict[str, str] = Field(default_factory=dict)
    family: str = "qzhou"
    """The family's name, for messages."""
    task_types: dict[TaskType, Task] = Field(default_factory=lambda: dict(TASK_TYPE_DEFAULTS))
    published_tasks: str | None = QZHOU_TASK_TABLE

    @field_validator("template")
    @classmethod
    def _template_has_its_field(cls, value: str) -> str:
        if "{instruction}" not in value:
            raise ValueError(f"an instruction template must hold the field {{instruction}}: {value!r}")
        try:
            value.format(instruction="")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"an instruction template may only hold the field {{instruction}} (write '{{{{' for a "
                f"literal brace): {error}"
            ) from None
        return value

    def format(self, instruction: str | None) -> str:
        """The prefix for one instruction; no instruction gives no prefix."""
        checked = check_instruction(instruction)
        return "" if not checked else self.template.format(instruction=checked)

    def side_prefixes(
        self,
        task: TaskLike = None,
        *,
        query_instruction: str | None = None,
        document_instruction: str | None = None,
    ) -> tuple[str, str]:
        """The (query, document) prefixes for ``task``, where an explicit instruction overrides one side.

        ``None`` leaves a side to the task; ``""`` means no instruction on that side. Every adapter
        that lets users override a side comes here, so the rule is decided once.
        """
        query, document = self.prefixes(task)
        if query_instruction is not None:
            query = self.format(check_instruction(query_instruction, what="query_instruction"))
        if document_instruction is not None:
            document = self.format(check_instruction(document_instruction, what="document_instruction"))
        return query, document

    def resolve(self, task: TaskLike = None) -> Task:
        """``task`` with this family's tables (a family without instructions resolves as QZhou does,
        which only decides the sides)."""
        return resolve_task(task, self if self.instructed_by_default else None)

    def prefixes(self, task: TaskLike = None) -> tuple[str, str]:
        """The (query prefix, document prefix) for ``task``; ``None`` is the model's default."""
        resolved = self.resolve(task)
        written_by_caller = isinstance(task, Task) or resolved.name == "custom"
        if self.instructed_by_default or written_by_caller:
            query = self.format(resolved.instruction)
            return query, (query if resolved.both_sides else "")
        return self._saved_prefixes(resolved)

    def _saved_prefixes(self, resolved: Task) -> tuple[str, str]:
        """The sentence-transformers prompts: one named after the task type on both sides (Nomic's
        ``clustering``), else ``query`` and ``document`` (or ``passage``, ``corpus``) by side."""
        saved = self.saved_prompts
        if resolved.name in saved:
            return saved[resolved.name], saved[resolved.name]
        query = saved.get("query", "")
        if resolved.both_sides:
            return query, query
        return query, saved.get("document", saved.get("passage", saved.get("corpus", "")))


QZHOU_PROMPT_STYLE = PromptStyle(template=QZHOU_INSTRUCTION_FORMAT, instructed_by_default=True)
