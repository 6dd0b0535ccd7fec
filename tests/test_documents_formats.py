"""The document readers on real files made by real writers: PDFs printed by headless Chromium (page
labels, encryption and a page of its own written by pypdf's writer, a copy cut in half), HTML pages
with scripts, styles and navigation, a Word file written by python-docx; and the chunk ids of text,
Markdown and JSON lines, which the readers must not change."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from qzhou_plugins import DEMO_MODEL
from qzhou_plugins.bulk.corpus import open_source
from qzhou_plugins.cli import main
from qzhou_plugins.documents import (
    BrokenDocumentError,
    Chunk,
    chunk_place,
    find_documents,
    read_chunks,
    read_documents,
    read_file,
)

CHROMIUM = "/usr/bin/chromium"
WORDS = ("green", "black", "oolong", "white", "yellow", "matcha", "sencha", "assam", "darjeeling", "pu-erh")
PAGE_BREAK = '<div style="break-after: page"></div>'


def paragraph(page: int, count: int) -> str:
    """Distinct words (``p2w17``) that show where each piece of text came from and whether any is lost."""
    return " ".join(f"p{page}w{i} {WORDS[i % len(WORDS)]}" for i in range(count))


REPORT_HTML = f"""<!doctype html><html><head><title>Tea report</title></head><body>
<h1>Tea report</h1><p>{paragraph(1, 60)}</p>{PAGE_BREAK}
<h2>Brewing</h2><p>{paragraph(2, 400)}</p>
<p>The last words, on page three: steep for two minutes.</p>{PAGE_BREAK}
<img src="leaf.png" style="width: 16cm">
</body></html>"""
"""Page 1 short, page 2 a paragraph too long for its page (it runs onto page 3), then a page holding
only an image (a scan)."""

PAGE_HTML = """<!doctype html><html><head><title>Green tea guide</title>
<style>body { font-family: serif } .secret { color: red }</style>
<script>var tracking = "SCRIPT-TEXT";</script></head><body>
<header><a href="/">HEADER-CHROME</a></header>
<nav><ul><li>NAV-HOME</li><li>NAV-SHOP</li></ul></nav>
<main><article><header><h1>Brewing green tea</h1></header>
<p>Green tea is brewed at <b>70 to 80</b> degrees.</p>
<template><p>TEMPLATE-TEXT</p></template><noscript>NOSCRIPT-TEXT</noscript>
<h2>Steeping times</h2><ul><li>Sencha: one minute</li><li>Gyokuro: two minutes</li></ul>
<table><tr><th>Tea</th><th>Water</th></tr><tr><td>Sencha</td><td>75 °C</td></tr></table>
<p hidden>HIDDEN-TEXT</p></article></main>
<footer>FOOTER-CHROME</footer><script>document.write("SCRIPT-TWO")</script></body></html>"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of every kind, good and bad, made once for the module (one Chromium print)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent: the PDFs are printed by headless Chromium")
    pypdf = pytest.importorskip("pypdf")
    image = pytest.importorskip("PIL.Image")
    docx = pytest.importorskip("docx")
    work = tmp_path_factory.mktemp("formats")
    where = work / "docs"
    where.mkdir()
    printing = work / "print"
    printing.mkdir()
    image.new("RGB", (600, 400), (40, 120, 60)).save(printing / "leaf.png")
    (printing / "report.html").write_text(REPORT_HTML, "utf-8")
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
         f"--print-to-pdf={where / 'report.pdf'}", (printing / "report.html").as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    report = pypdf.PdfReader(where / "report.pdf")
    assert len(report.pages) == 4, "the report should print on four pages"
    labelled = pypdf.PdfWriter(clone_from=report)
    labelled.set_page_label(0, 0, style="/r")  # i
    labelled.set_page_label(1, 3, style="/D", start=1)  # 1, 2, 3
    labelled.write(where / "labelled.pdf")
    locked = pypdf.PdfWriter(clone_from=report)
    locked.encrypt(user_password="secret", owner_password="owner", algorithm="AES-256")
    locked.write(where / "locked.pdf")
    scan = pypdf.PdfWriter()
    scan.add_page(report.pages[3])  # the image page alone: a PDF with no text layer at all
    scan.write(where / "scan.pdf")
    whole = (where / "report.pdf").read_bytes()
    (where / "damaged.pdf").write_bytes(whole[: len(whole) // 2])
    (where / "page.html").write_text(PAGE_HTML, "utf-8")
    word = docx.Document()
    word.core_properties.title = "Tea notes"
    word.add_heading("Storing tea", level=1)
    word.add_paragraph("Keep tea in an airtight tin, away from light.")
    word.add_heading("Water", level=2)
    word.add_paragraph("Soft water brings out the flavour.")
    table = word.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("Tea", "Temperature"), ("Oolong", "90 °C")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    word.save(where / "notes.docx")
    (where / "leaf.png").write_bytes((printing / "leaf.png").read_bytes())
    (where / "sheet.xlsx").write_bytes(b"PK\x03\x04")  # counted by its suffix, never opened
    (where / "extra.png").write_bytes((printing / "leaf.png").read_bytes())
    (where / ".hidden.png").write_bytes(b"x")  # hidden: skipped silently
    return where


SCAN_WARNING = "page {} has no text layer (scanned?); OCR is not done, their text is not indexed"


def chunks_of(folder: Path, name: str) -> list[Chunk]:
    return read_chunks(folder / name, 1000, 100, source=name)


def test_pdf_chunks_record_their_pages_and_lose_no_text(folder: Path) -> None:
    found = read_file(folder / "report.pdf", 1000, 100, source="report.pdf")
    chunks = found.chunks
    assert found.warnings == [f"{folder / 'report.pdf'}: {SCAN_WARNING.format(4)}"]
    # page 1 is short: its chunk runs on into page 2; no labels in the file, so no page_label
    assert chunks[0].metadata == {"source": "report.pdf", "chunk": 0, "page": 1, "page_end": 2}
    assert chunks[0].text.startswith("Tea report\np1w0 green")
    assert {c.metadata["page"] for c in chunks} == {1, 2, 3}  # page 4 holds no text
    running = [c for c in chunks if c.metadata.get("page_end") == 3]
    assert len(running) == 1 and running[0].metadata["page"] == 2
    assert [c.metadata["page_end"] for c in chunks if "page_end" in c.metadata] == [2, 3]
    assert chunks[-1].text.endswith("steep for two minutes.")
    words = set(" ".join(c.text for c in chunks).split())
    expected = {f"p{page}w{i}" for page, count in [(1, 60), (2, 400)] for i in range(count)}
    assert expected <= words  # nothing lost where page 2 turns into page 3
    assert chunk_place(running[0].metadata) == f"report.pdf pp. 2-3 (chunk {running[0].metadata['chunk']})"


def test_pdf_page_labels_are_recorded_where_they_differ_from_the_number(folder: Path) -> None:
    plain = chunks_of(folder, "report.pdf")
    labelled = chunks_of(folder, "labelled.pdf")
    assert [c.text for c in labelled] == [c.text for c in plain]
    assert labelled[0].metadata["page_label"] == "i"
    on_two = [c.metadata for c in labelled if c.metadata["page"] == 2]
    assert on_two and all(m["page_label"] == "1" for m in on_two)
    assert chunk_place(labelled[0].metadata) == "labelled.pdf pp. 1-2 (chunk 0)"  # a range: page numbers
    assert chunk_place(labelled[-1].metadata) == f"labelled.pdf p. 2 (chunk {len(labelled) - 1})"  # page 3


def test_html_keeps_the_text_and_title_and_never_the_chrome(folder: Path) -> None:
    chunks = read_chunks(folder / "page.html", 120, 0, source="page.html")
    text = "\n".join(c.text for c in chunks)
    chrome = ("SCRIPT", "TEMPLATE", "NOSCRIPT", "NAV-", "HEADER-CHROME", "FOOTER-CHROME", "HIDDEN", "font")
    assert [never for never in chrome if never in text] == []
    assert "Brewing green tea\nGreen tea is brewed at 70 to 80 degrees." in text  # an article's header stays
    assert "Sencha: one minute\nGyokuro: two minutes" in text
    assert "Tea | Water\nSencha | 75 °C" in text
    assert {c.metadata["title"] for c in chunks} == {"Green tea guide"}
    by_heading = {c.metadata.get("heading") for c in chunks}
    assert by_heading == {"Brewing green tea", "Steeping times"}
    steeping = [c for c in chunks if c.metadata["heading"] == "Steeping times"]
    assert steeping[0].text.startswith("Steeping times")


def test_docx_paragraphs_headings_and_tables(folder: Path) -> None:
    chunks = read_chunks(folder / "notes.docx", 60, 0, source="notes.docx")
    text = "\n".join(c.text for c in chunks)
    assert "Storing tea\nKeep tea in an airtight tin, away from light." in text
    assert "Tea | Temperature\nOolong | 90 °C" in text
    assert {c.metadata["heading"] for c in chunks} == {"Storing tea", "Water"}
    assert {c.metadata["title"] for c in chunks} == {"Tea notes"}


def test_a_folder_skips_bad_files_with_warnings_and_sums_up_the_rest(folder: Path) -> None:
    found = find_documents([folder, folder / "page.html", folder])  # each file and each skipped one once
    assert sorted(f.name for f in found.files) == [
        "damaged.pdf", "labelled.pdf", "locked.pdf", "notes.docx", "page.html", "report.pdf", "scan.pdf",
    ]  # fmt: skip
    assert found.skipped_line() == "skipped 3 files: 2 .png, 1 .xlsx (kinds no reader takes)"
    documents = read_documents(found.files, 1000, 100, named=found.named)
    broken = {file.name: reason for file, reason in documents.broken}
    assert broken == {
        "locked.pdf": f"{folder / 'locked.pdf'}: skipped, the PDF is encrypted (it needs a password to open)",
        "damaged.pdf": f"{folder / 'damaged.pdf'}: skipped, not a readable PDF (damaged or truncated; Failed "
        "to load document (PDFium: Data format error))",
    }
    assert [f.name for f in documents.empty] == ["scan.pdf"]
    assert {(f.name, w) for f, w in documents.warnings} == {
        (name, f"{folder / name}: {SCAN_WARNING.format(page)}")
        for name, page in [("labelled.pdf", 4), ("report.pdf", 4), ("scan.pdf", 1)]
    }
    named = find_documents([folder / "locked.pdf"])
    with pytest.raises(BrokenDocumentError, match=r"locked\.pdf: skipped, the PDF is encrypted"):
        read_documents(named.files, 1000, 100, named=named.named)


def test_index_reads_the_folder_and_names_what_it_skipped(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "db"
    code = main(["index", str(folder), "-c", "formats", "--db", str(database), "--model", DEMO_MODEL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "skipped 3 files: 2 .png, 1 .xlsx" in captured.err
    assert "locked.pdf: skipped, the PDF is encrypted" in captured.err
    assert "scan.pdf: page 1 has no text layer" in captured.err
    # 7 found, the encrypted and the damaged one skipped
    assert "added 5, replaced 0, removed 0, unchanged 0, skipped 2 file(s)" in captured.out
    query = ["query", "keep tea in an airtight tin", "-c", "formats", "--db", str(database), "-k", "1"]
    assert main(query) == 0
    assert "notes.docx (chunk" in capsys.readouterr().out
    code = main(["index", str(folder / "damaged.pdf"), "-c", "formats", "--db", str(database)])
    assert code == 1
    assert "damaged.pdf: skipped, not a readable PDF" in capsys.readouterr().err


def test_the_bulk_documents_source_reads_the_same_chunks(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``embed`` on a folder reads every format through the same code as ``index``, ids and all."""
    with caplog.at_level(logging.WARNING):
        source = open_source(folder)
        rows = [
            (ident, text)
            for batch in source.batches()
            for ident, text in zip(batch.ids, batch.texts, strict=True)
        ]
    documents = read_documents(find_documents([folder]).files, 1000, 100)
    assert rows == [(c.id, c.text) for c in documents.chunks]
    assert "locked.pdf: skipped, the PDF is encrypted" in caplog.text
    assert "skipped 3 files: 2 .png, 1 .xlsx" in caplog.text
    with pytest.raises(ValueError, match=r"damaged\.pdf: skipped, not a readable PDF"):
        list(open_source(folder / "damaged.pdf").batches())


GOLDEN_MD = (
    "# Brewing\n\nGreen tea is brewed at 70 to 80 degrees for two minutes.\n\n## Black tea\n\n"
    + "Black tea takes boiling water and four minutes. " * 12
)
GOLDEN_TXT = (
    "Oolong is partly oxidised.\n\n"
    + "It sits between green and black tea. " * 20
    + "\n\n绿茶的冲泡温度一般在七十到八十度之间。" * 12
)
GOLDEN_JSONL = (
    '{"text": "Matcha is whisked, not steeped.", "category": "brewing", "source": "mine"}\n'
    '{"text": "Pu-erh is aged for years."}\n'
)


@pytest.mark.parametrize(
    ("name", "content", "ids"),
    [
        ("notes.md", GOLDEN_MD, ("bd1ed83b5f9c3b517b5f165c508627b5", "b19188ee165a2429abb38a3318d683ca")),
        ("notes.txt", GOLDEN_TXT, ("54fbe633eae200b65f5e9907247a074d", "3d0256a6797d023ea2e51bc032564f89")),
        (
            "notes.jsonl",
            GOLDEN_JSONL,
            ("0e4812f0630131d693e90b4984130e98", "fb8355f9164918a731bbf9fc0deaf87a"),
        ),
    ],
)
def test_text_markdown_and_jsonl_keep_the_ids_they_had(
    tmp_path: Path, name: str, content: str, ids: tuple[str, str]
) -> None:
    """The ids the single-module reader gave these files (chunk size 200, overlap 20): a collection
    indexed before the readers existed is not re-added in full."""
    (tmp_path / name).write_text(content, "utf-8")
    got = [c.id for c in read_chunks(tmp_path / name, 200, 20, source=name)]
    assert (got[0], got[-1]) == ids
    assert len(got) == {"notes.md": 6, "notes.txt": 8, "notes.jsonl": 2}[name]


def test_no_reader_library_is_imported_for_text() -> None:
    """A folder of text never loads PDFium, selectolax or python-docx."""
    code = (
        "import sys; from pathlib import Path; import tempfile\n"
        "from qzhou_plugins.documents import read_chunks\n"
        "p = Path(tempfile.mkdtemp()) / 'a.md'; p.write_text('# Tea\\n\\nGreen.', 'utf-8')\n"
        "read_chunks(p, 100, 0)\n"
        "print(sorted(m for m in ('pypdfium2', 'selectolax', 'docx') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "[]", result.stderr
