"""The front door stays light: ``import qzhou_plugins``, its public names and ``--help`` import no
heavy runtime or framework, and the lazily imported names are the ones the package declares.

Each check runs in a fresh interpreter, since this test process has long imported everything."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from conftest import REPO

HEAVY = ("torch", "transformers", "chromadb", "langchain_core", "llama_index", "ray", "fastapi", "pyarrow")
"""What a process that does not use them must never import: each takes from 0.3 to 5 s."""

PACKAGE = REPO / "src" / "qzhou_plugins"


def heavy_modules_after(code: str) -> list[str]:
    """The modules of :data:`HEAVY` in ``sys.modules`` once ``code`` has run in a new interpreter."""
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_package_imports_nothing_heavy() -> None:
    assert heavy_modules_after("import qzhou_plugins") == []


def test_every_public_name_resolves_and_none_pulls_torch() -> None:
    code = (
        "import qzhou_plugins as q\n"
        "missing = [n for n in q.__all__ if getattr(q, n, None) is None]\n"
        "assert not missing, missing"
    )
    assert heavy_modules_after(code) == []


def test_the_command_line_help_imports_nothing_heavy() -> None:
    code = (
        "import argparse\nfrom qzhou_plugins.cli import build_parser\nparser = build_parser()\n"
        "parser.format_help()\n"
        "commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))\n"
        "for sub in commands.choices.values():\n    sub.format_help()"
    )
    assert heavy_modules_after(code) == []


def test_a_local_model_still_loads_through_the_lazy_names(minilm_path: str) -> None:
    code = f"from qzhou_plugins import Encoder\nEncoder(model={minilm_path!r}).encode_documents(['tea'])"
    assert "torch" in heavy_modules_after(code)


def test_an_unknown_name_is_an_attribute_error() -> None:
    import qzhou_plugins

    with pytest.raises(AttributeError, match="no attribute 'Encodr'"):
        qzhou_plugins.Encodr  # noqa: B018


def lazy_homes(init: str) -> tuple[set[str], set[str], set[str]]:
    """Names of an ``__init__``: its ``__all__``, its ``lazy_names`` table and its TYPE_CHECKING imports."""
    tree = ast.parse((PACKAGE / init).read_text("utf-8"))
    declared: set[str] = set()
    lazy: set[str] = set()
    typed: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            declared = {ast.literal_eval(element) for element in node.value.elts}  # type: ignore[attr-defined]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "lazy_names":
            for names in node.args[1].values:  # type: ignore[attr-defined]
                lazy |= set(ast.literal_eval(names))
        elif isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            typed |= {a.asname or a.name for i in node.body if isinstance(i, ast.ImportFrom) for a in i.names}
    return declared, lazy, typed


@pytest.mark.parametrize(
    "init",
    [
        "__init__.py",
        "backends/local/__init__.py",
        "backends/llama_cpp/__init__.py",
        "bulk/__init__.py",
        "gguf/__init__.py",
        "lexical/__init__.py",
    ],
)
def test_the_lazy_names_are_the_declared_and_typed_ones(init: str) -> None:
    declared, lazy, typed = lazy_homes(init)
    assert lazy, "no lazy_names table found"
    assert lazy <= declared, lazy - declared
    assert lazy <= typed, f"type checkers would not see {lazy - typed}"
