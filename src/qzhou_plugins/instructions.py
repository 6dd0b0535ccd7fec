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

_RETRIEVAL_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
_SIMILARITY_INSTRUCTION = "Retrieve semantically similar text"

TASK_TYPE_DEFAULTS: dict[TaskType, Task] = {
    TaskType.RETRIEVAL: Task(name="retrieval", instruction=_RETRIEVAL_INSTRUCTION),
    # Reranking scores passages against a query: the same asymmetric shape as retrieval.
    TaskType.RERANKING: Task(name="reranking", instruction=_RETRIEVAL_INSTRUCTION),
    TaskType.STS: Task(name="sts", instruction=_SIMILARITY_INSTRUCTION, both_sides=True),
    TaskType.PAIR_CLASSIFICATION: Task(
        name="pair_classification",
        instruction="Retrieve text that is semantically similar to the given text",
        both_sides=True,
    ),
    TaskType.CLASSIFICATION: Task(
        name="classification",
        instruction="Classify the given text into its category",
        both_sides=True,
    ),
    TaskType.CLUSTERING: Task(
        name="clustering",
        instruction="Identify the topic or theme of the given text",
        both_sides=True,
    ),
    TaskType.SUMMARIZATION: Task(name="summarization", instruction=_SIMILARITY_INSTRUCTION, both_sides=True),
    TaskType.BITEXT: Task(
        name="bitext",
        instruction="Retrieve parallel sentences",
        both_sides=True,
    ),
}


@cache
def published_tasks() -> dict[str, Task]:
    """The per-task instructions of the authors' MTEB and C-MTEB evaluation, by task name."""
    raw = json.loads(
        resources.files("qzhou_plugins").joinpath("data/task_instructions.json").read_text("utf-8")
    )
    both_sides = set(raw["both_sides"])
    table: dict[str, Task] = {}
    for benchmark in ("mteb_eng_v2", "cmteb_cmn_v1"):
        for name, instruction in raw[benchmark].items():
            table[name] = Task(name=name, instruction=instruction, both_sides=name in both_sides)
    return table


class UnknownTaskError(ValueError):
    """A task name that is neither a task type nor a published task."""


def resolve_task(task: TaskLike) -> Task:
    """Turn any accepted ``task`` value into a :class:`Task`.

    ``None`` means retrieval, the common RAG case. A string is tried as a task type, then as a
    published task name (exact, then ignoring case); a string containing white space is a custom
    query-side instruction. Anything else is an error that lists the close matches, because a typo
    in a task name would otherwise become a silently wrong instruction.
    """
    if task is None:
        return TASK_TYPE_DEFAULTS[TaskType.RETRIEVAL]
    if isinstance(task, Task):
        return task
    if isinstance(task, TaskType):
        return TASK_TYPE_DEFAULTS[task]
    if not isinstance(task, str):
        raise TypeError(f"task must be a string or a Task, not {type(task).__name__}")
    text = task.strip()
    if not text:
        raise UnknownTaskError("task must not be empty; use 'retrieval' or a Task(instruction=None)")
    types = {member.value: member for member in TaskType}
    if text.lower() in types:
        return TASK_TYPE_DEFAULTS[types[text.lower()]]
    table = published_tasks()
    if text in table:
        return table[text]
    by_lower = {name.lower(): name for name in table}
    if text.lower() in by_lower:
        return table[by_lower[text.lower()]]
    if any(character.isspace() for character in text):
        return Task(name="custom", instruction=task)
    candidates = list(types) + list(table)
    close = difflib.get_close_matches(text, candidates, n=5, cutoff=0.6)
    close += [
        c
        for c in difflib.get_close_matches(text.lower(), by_lower, n=5, cutoff=0.6)
        if by_lower[c] not in close
    ]
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise UnknownTaskError(
        f"Unknown task {task!r}.{hint} Use a task type ({', '.join(types)}), a published task name "
        "(see qzhou_plugins.instructions.published_tasks()), or a custom instruction sentence."
    )


class PromptStyle(BaseModel):
    """How a model family turns a task into the text placed before a query and a document.

    ``template`` formats an instruction (QZhou: ``Instruct: ...\nQuery: ``; others use the instruction
    as a literal prefix). ``instructed_by_default`` is True for models trained with task instructions
    (QZhou): every task type and published task applies. Other models were not trained with these
    instructions, so they only get a prefix the caller wrote (a custom instruction or a :class:`Task`),
    or else the model's own sentence-transformers prompts (``saved_prompts``), or nothing.
    """

    model_config = ConfigDict(frozen=True)

    template: str = "{instruction}"
    instructed_by_default: bool = False
    saved_prompts: dict[str, str] = Field(default_factory=dict)

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

    def prefixes(self, task: TaskLike = None) -> tuple[str, str]:
        """The (query prefix, document prefix) for ``task``; ``None`` is the model's default."""
        resolved = resolve_task(task)
        written_by_caller = isinstance(task, Task) or resolved.name == "custom"
        if self.instructed_by_default or written_by_caller:
            query = self.format(resolved.instruction)
            return query, (query if resolved.both_sides else "")
        if self.saved_prompts:
            query = self.saved_prompts.get("query", "")
            if resolved.both_sides:
                return query, query
            saved = self.saved_prompts
            return query, saved.get("document", saved.get("passage", saved.get("corpus", "")))
        return "", ""


QZHOU_PROMPT_STYLE = PromptStyle(template=QZHOU_INSTRUCTION_FORMAT, instructed_by_default=True)
