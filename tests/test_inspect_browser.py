"""The inspector's page in a real headless Chromium (Debian's ``chromium``, driven by Playwright)
against a real ``qzhou-plugins inspect`` process on 127.0.0.1 over the example notes.

Each test asserts on what the page shows, and saves a screenshot of its view under the test's
temporary folder; with ``QZHOU_UPDATE_SCREENSHOTS=1`` they are also copied to ``docs/images/inspect-*.png``
(what docs/inspect.md shows). No browser is ever downloaded: without /usr/bin/chromium (``apt-get
install chromium``; ``.ci/run`` does) or the playwright package, the module is skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from conftest import REPO
from inspect_data import TEA, evaluation_paths, notes
from servers import free_port, running, server_environment

CHROMIUM = Path(os.environ.get("QZHOU_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent: `apt-get install chromium` (.ci/run does) to run the browser tests",
                allow_module_level=True)  # fmt: skip
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (test extra)")
expect = sync_api.expect
expect.set_options(timeout=20_000)  # the first search loads the model in the inspect process

QUESTION = "green tea water temperature"
PROCESSING = "examples/documents/processing.md"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("inspect-screenshots")
    yield folder
    if os.environ.get("QZHOU_UPDATE_SCREENSHOTS") == "1":
        for image in folder.glob("inspect-*.png"):
            shutil.copy(image, REPO / "docs" / "images" / image.name)


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Iterator[str]:
    """A real ``qzhou-plugins inspect`` over the notes, with two evaluation files to plot."""
    root = notes(tmp_path_factory, minilm_path)
    database = root / "db"
    lexical, dense = evaluation_paths(root)
    port = free_port()
    command = [sys.executable, "-m", "qzhou_plugins.cli", "inspect", "--db", str(database),
               "--port-of-page", str(port), "--eval", str(lexical), "--eval", str(dense)]  # fmt: skip
    log = tmp_path_factory.mktemp("inspect-log") / "inspect.log"
    with running(command, f"http://127.0.0.1:{port}/api/health", log, timeout=120, env=server_environment()):
        printed = log.read_text("utf-8")
        assert f"Inspecting the collections of database {database} at http://127.0.0.1:{port}/" in printed
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    yield opened
    context.close()


def shoot(page: Any, folder: Path, view: str) -> None:
    page.screenshot(path=str(folder / f"inspect-{view}.png"), full_page=True)


def hit_rows(page: Any) -> list[list[str]]:
    page.wait_for_selector("#hits tbody tr")
    return [row.inner_text().split("\t") for row in page.query_selector_all("#hits tbody tr")]


def test_collections_view(page: Any, address: str, screenshots: Path) -> None:
    page.goto(address)
    page.wait_for_selector("#collections tbody tr")
    tea = page.inner_text("#collections tbody tr:has(th:text-is('tea'))")
    for shown in ("20", "all-MiniLM-L6-v2", '""', "384 dimensions", "english analyzer, fts5: in step"):
        assert shown in tea
    assert "model-that-was-deleted" in page.inner_text("#collections tbody tr:has(th:text-is('broken'))")
    shoot(page, screenshots, "collections")


def test_a_model_that_cannot_load_is_said_on_the_page(page: Any, address: str) -> None:
    page.goto(address + "?view=search&collection=broken&q=tea")
    page.wait_for_selector("#error:not([hidden])")
    assert re.fullmatch(
        r"Error: model directory '.*model-that-was-deleted' does not exist", page.inner_text("#error")
    )
    assert page.is_hidden("#results")


def test_search_in_each_mode_from_the_keyboard(page: Any, address: str, screenshots: Path) -> None:
    page.goto(address + "?view=search")
    page.wait_for_selector("#collection option", state="attached")
    page.select_option("#collection", TEA)
    page.fill("#q", QUESTION)
    for mode in ("dense", "lexical", "hybrid"):
        page.select_option("#mode", mode)
        page.focus("#q")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(f"mode={mode}"))
        expect(page.locator("#scores-line")).to_contain_text(_scale(mode))
        rows = hit_rows(page)
        assert len(rows) == 5 and "brewing.txt (chunk 0)" in rows[0][7]
        dense_column, lexical_column = [row[2] for row in rows], [row[3] for row in rows]
        assert all(
            cell == "—"
            for cell in (lexical_column if mode == "dense" else dense_column if mode == "lexical" else [])
        )
        assert rows[0][6] == {"dense": "dense", "lexical": "lexical", "hybrid": "dense + lexical"}[mode]
        marks = page.locator("#hits tbody tr:first-child mark").all_inner_texts()
        assert (mode == "dense") == (not marks) and (mode == "dense" or "temperature" in marks)
    assert "The model saw: green tea water temperature" in page.inner_text("#instructed")
    assert "Lexical terms: green tea water temperatur" in page.inner_text("#terms")
    query = parse_qs(urlparse(page.url).query)
    assert query["q"] == [QUESTION] and query["collection"] == [TEA] and query["mode"] == ["hybrid"]
    shoot(page, screenshots, "search")


def _scale(mode: str) -> str:
    return {"dense": "cosine", "lexical": "BM25", "hybrid": "reciprocal-rank fusion"}[mode]


def test_a_shared_link_reopens_the_search_and_compare_draws_the_lines(
    page: Any, address: str, screenshots: Path
) -> None:
    page.goto(address + f"?collection={TEA}&q=green+tea+water+temperature&mode=hybrid&k=5")
    assert len(hit_rows(page)) == 5
    assert page.input_value("#q") == QUESTION and page.input_value("#mode") == "hybrid"
    assert page.input_value("#collection") == TEA
    page.click("#compare-button")
    page.wait_for_selector("#compare-lines line", state="attached")
    for mode in ("dense", "hybrid", "lexical"):
        assert page.locator(f".compare-list[data-mode='{mode}'] li").count() == 5
    assert page.locator("#compare-lines line").count() >= 4  # the chunks the modes share, joined
    assert "view=compare" in page.url
    shoot(page, screenshots, "compare")


def test_a_filter_and_its_error(page: Any, address: str, screenshots: Path) -> None:
    page.goto(address + f"?view=search&collection={TEA}")
    page.fill("#q", QUESTION)
    page.fill("#where-filter", f'{{"source": "{PROCESSING}"}}')
    page.click("#search-button")
    assert {row[7].split(" (")[0] for row in hit_rows(page)} == {PROCESSING}
    page.fill("#where-filter", "{source: 1")
    page.click("#search-button")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error").startswith("Error: where: not valid JSON (Expecting property name")
    shoot(page, screenshots, "error")


def test_a_reranked_query(page: Any, address: str) -> None:
    page.goto(
        address + f"?view=search&collection={TEA}&q=Which+teas+have+no+caffeine%3F&mode=hybrid&k=3&rerank=10"
    )
    rows = hit_rows(page)
    assert "reranked by all-MiniLM-L6-v2 (embedding) among the best 10 candidates" in page.inner_text(
        "#scores-line"
    )
    assert all(row[5] != "—" and row[4] != "—" for row in rows)  # the rerank score beside the fused one
    assert "caffeine.md" in rows[0][7]
    page.click("#compare-button")  # the modes' own lists, and the hybrid one reranked beside them
    page.wait_for_selector(".compare-list[data-mode='reranked'] li")
    columns = page.locator(".compare-column h3").all_inner_texts()
    assert columns == ["dense", "hybrid", "lexical", "hybrid, reranked"]
    reranked = page.locator(".compare-list[data-mode='reranked'] li")
    assert reranked.count() == 3 and "caffeine.md" in reranked.first.inner_text()
    assert "then the hybrid list reranked. Scores:" in page.inner_text("#compare-note")


def test_a_document_with_its_neighbours(page: Any, address: str, screenshots: Path) -> None:
    page.goto(address + f"?view=search&collection={TEA}&q=oolong+black+tea+oxidised&mode=lexical&k=10")
    hit_rows(page)
    link = page.locator(f"#hits a:text-matches('{PROCESSING} \\\\(chunk [1-9]')").first
    source = link.inner_text()
    link.click()
    page.wait_for_selector("#neighbours li")
    assert "view=document" in page.url and page.inner_text("#document-text").strip()
    metadata = page.inner_text("#document-metadata")
    assert PROCESSING in metadata and "chunk" in metadata
    neighbours = page.locator("#neighbours li").all_inner_texts()
    assert len(neighbours) >= 2 and sum("(this one)" in one for one in neighbours) == 1
    shoot(page, screenshots, "document")
    page.go_back()
    page.wait_for_selector("#hits tbody tr")
    assert source in page.inner_text("#hits")


def test_evaluation_plots(page: Any, address: str, screenshots: Path, tmp_path: Path) -> None:
    page.goto(address + "?view=evaluation")
    page.wait_for_selector("#eval-scatter svg")
    assert "3 run(s) from 2 file(s)" in page.inner_text("#eval-note")
    assert "nDCG@10 and recall@100 per run" in page.inner_text("#eval-bars")
    assert page.locator("#eval-bars svg rect title").count() == 6  # two bars (with a tooltip) per run
    names, picture = (
        page.locator("#eval-bars svg text.run-name"),
        page.locator("#eval-bars svg").bounding_box(),
    )
    assert names.count() == 3
    for box in (names.nth(i).bounding_box() for i in range(3)):  # each name whole inside the picture
        assert picture["x"] <= box["x"] and box["x"] + box["width"] <= picture["x"] + picture["width"]
        assert picture["y"] <= box["y"] and box["y"] + box["height"] <= picture["y"] + picture["height"]
    shown = names.nth(2).evaluate("name => name.lastChild.textContent")
    assert shown == "dense-reranked: dense + rerank all-MiniLM-L6-v2"  # not cut
    assert page.locator("#eval-scatter svg circle").count() == 4
    assert page.locator("#worst > li").count() == 4
    page.select_option("#eval-first", "1")
    page.select_option("#eval-second", "2")  # the dense run against itself reranked
    expect(page.locator("#eval-scatter")).to_contain_text("dense-reranked: dense + rerank all-MiniLM-L6-v2")
    expect(page.locator("#eval-scatter")).to_contain_text("dense-reranked: dense (nDCG@10)")
    with page.expect_download() as download:
        page.click("[data-save='eval-bars'][data-format='svg']")
    assert download.value.suggested_filename == "eval-bars.svg"
    assert Path(download.value.path()).read_text("utf-8").startswith("<svg")
    with page.expect_download() as download:
        page.click("[data-save='eval-scatter'][data-format='png']")
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shoot(page, screenshots, "evaluation")
