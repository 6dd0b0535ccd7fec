"""The documentation site builds in strict mode, and the commands it shows are real commands."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from qzhou_plugins.cli import UsageError, build_parser

DOCS = REPO / "docs"


def nav_pages(entries: list) -> list[str]:
    pages: list[str] = []
    for entry in entries:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_every_page_is_in_the_nav_and_exists() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with mkdocs (the docs extra)")
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text("utf-8"))
    listed = nav_pages(config["nav"])
    on_disk = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    assert sorted(listed) == on_disk


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """Warnings fail the build: broken links, missing pages, docstrings mkdocstrings cannot render."""
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.is_file():
        pytest.skip("mkdocs is not installed (the docs extra)")
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", tmp_path / "site"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reference = (tmp_path / "site" / "reference" / "encoder" / "index.html").read_text("utf-8")
    assert "encode_queries" in reference  # the API reference is generated from the docstrings
    assert "evaluate_retrieval" in (tmp_path / "site" / "reference" / "evaluation" / "index.html").read_text(
        "utf-8"
    )


def shown_commands() -> list[tuple[str, str]]:
    """Every ``qzhou-plugins ...`` command of a bash block in the docs, with the page it is on.

    Lines continued with a backslash are joined first, as the shell joins them."""
    commands = []
    for page in sorted(DOCS.rglob("*.md")):
        for block in re.findall(r"```bash\n(.*?)```", page.read_text("utf-8"), flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                if line.startswith("qzhou-plugins "):
                    commands.append((page.relative_to(DOCS).as_posix(), line.split("  #")[0]))
    return commands


def test_the_commands_in_the_docs_parse() -> None:
    commands = shown_commands()
    assert len(commands) >= 10
    parser = build_parser()
    for page, line in commands:
        try:
            parser.parse_args(shlex.split(line)[1:])
        except UsageError as error:
            pytest.fail(f"{page}: `{line}` does not parse: {error}")
