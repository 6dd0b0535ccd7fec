"""Instructions per task type, the published table, both-sides rules, custom instructions."""

from __future__ import annotations

import pytest

from qzhou_plugins import Encoder, Task, TaskType, UnknownTaskError, published_tasks, resolve_task
from qzhou_plugins.instructions import QZHOU_PROMPT_STYLE, PromptStyle

RETRIEVAL = "Given a web search query, retrieve relevant passages that answer the query"


def qzhou(instruction: str) -> str:
    return f"Instruct: {instruction}\nQuery: "


@pytest.mark.parametrize(
    ("task", "query", "document"),
    [
        (None, qzhou(RETRIEVAL), ""),
        ("retrieval", qzhou(RETRIEVAL), ""),
        ("reranking", qzhou(RETRIEVAL), ""),
        ("sts", qzhou("Retrieve semantically similar text"), qzhou("Retrieve semantically similar text")),
        (
            "pair_classification",
            qzhou("Retrieve text that is semantically similar to the given text"),
            qzhou("Retrieve text that is semantically similar to the given text"),
        ),
        (
            "classification",
            qzhou("Classify the given text into its category"),
            qzhou("Classify the given text into its category"),
        ),
        (
            "clustering",
            qzhou("Identify the topic or theme of the given text"),
            qzhou("Identify the topic or theme of the given text"),
        ),
        (
            "summarization",
            qzhou("Retrieve semantically similar text"),
            qzhou("Retrieve semantically similar text"),
        ),
        ("bitext", qzhou("Retrieve parallel sentences"), qzhou("Retrieve parallel sentences")),
        (
            TaskType.STS,
            qzhou("Retrieve semantically similar text"),
            qzhou("Retrieve semantically similar text"),
        ),
    ],
)
def test_task_types_give_exact_prefixes_on_each_side(task: object, query: str, document: str) -> None:
    assert QZHOU_PROMPT_STYLE.prefixes(task) == (query, document)  # type: ignore[arg-type]


def test_every_task_type_has_a_default() -> None:
    for member in TaskType:
        assert resolve_task(member.value).instruction


def test_published_table_is_shipped_and_selectable() -> None:
    table = published_tasks()
    assert len(table) == 72
    fiqa = resolve_task("FiQA2018")
    assert (
        fiqa.instruction == "Given a financial question, retrieve user replies that best answer the question"
    )
    assert not fiqa.both_sides
    assert QZHOU_PROMPT_STYLE.prefixes("FiQA2018") == (qzhou(fiqa.instruction), "")
    # Symmetric in the published evaluation: both sides get the instruction.
    dup = qzhou("Retrieve duplicate questions from AskUbuntu forum")
    assert QZHOU_PROMPT_STYLE.prefixes("AskUbuntuDupQuestions") == (dup, dup)
    # A Chinese task, and the trailing full stop the authors used, kept to the letter.
    assert resolve_task("Ocnli").instruction == "Retrieve semantically similar text."
    assert resolve_task("T2Reranking").both_sides and not resolve_task("T2Retrieval").both_sides
    assert resolve_task("fiqa2018") == fiqa  # case is forgiven


def test_custom_instruction_keeps_newlines_and_goes_on_the_query_side() -> None:
    custom = "Given a legal question,\nretrieve the statute that answers it"
    assert QZHOU_PROMPT_STYLE.prefixes(custom) == (qzhou(custom), "")
    symmetric = Task(name="mine", instruction="Find near-duplicate tickets", both_sides=True)
    assert QZHOU_PROMPT_STYLE.prefixes(symmetric) == (
        qzhou(symmetric.instruction),
        qzhou(symmetric.instruction),
    )
    assert QZHOU_PROMPT_STYLE.prefixes(Task(name="bare", instruction=None)) == ("", "")


def test_unknown_task_lists_close_matches() -> None:
    with pytest.raises(UnknownTaskError, match=r"Unknown task 'FiQA2019'.*Close matches: FiQA2018"):
        resolve_task("FiQA2019")
    with pytest.raises(UnknownTaskError, match=r"Close matches: .*retrieval"):
        resolve_task("retreival")
    with pytest.raises(UnknownTaskError, match="must not be empty"):
        resolve_task("  ")
    with pytest.raises(TypeError, match="task must be a string or a Task"):
        resolve_task(3)  # type: ignore[arg-type]


def test_models_without_instruction_training_get_only_what_the_caller_writes() -> None:
    plain = PromptStyle()
    assert plain.prefixes(None) == ("", "")
    assert plain.prefixes("sts") == ("", "")
    assert plain.prefixes("FiQA2018") == ("", "")
    assert plain.prefixes("Represent this sentence for searching") == (
        "Represent this sentence for searching",
        "",
    )


def test_saved_sentence_transformers_prompts_are_used() -> None:
    e5 = PromptStyle(saved_prompts={"query": "query: ", "document": "passage: "})
    assert e5.prefixes() == ("query: ", "passage: ")
    assert e5.prefixes("sts") == ("query: ", "query: ")  # symmetric: both texts embedded alike


def test_encoder_applies_the_prefix_it_reports(tiny_qzhou_path: str) -> None:
    encoder = Encoder(model=tiny_qzhou_path)
    query_prefix, document_prefix = encoder.prefixes("FiQA2018")
    text = ["How do index funds work?"]
    raw_query = encoder.encode_with_prefix(text, query_prefix)
    assert (encoder.encode_queries(text, "FiQA2018") == raw_query).all()
    assert (
        encoder.encode_documents(text, "FiQA2018") == encoder.encode_with_prefix(text, document_prefix)
    ).all()
    assert (encoder.encode(text, resolve_task("FiQA2018").instruction) == raw_query).all()
    assert not (encoder.encode_documents(text, "FiQA2018") == raw_query).all()
