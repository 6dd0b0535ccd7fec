"""PDF reading: our reader against LlamaIndex's and LangChain's PDF loaders, and SciFact printed to PDF
against SciFact as text.

Two measurements, each a function returning a dict (``bench_ingest.py`` imports them) and printed by
:func:`main`:

- :func:`pdf_extraction`: pages per second of text extraction on the same PDFs, ours (PDFium, through
  ``qzhou_plugins.documents``) against LlamaIndex's ``SimpleDirectoryReader`` (which reads a PDF with
  pypdf through llama-index-readers-file) and LangChain's ``PyPDFLoader`` (pypdf too), each giving
  one text per page; the best of ``repeats`` runs, alternated, and the ratios. The PDFs are SciFact
  abstracts printed by headless Chromium: one file per abstract, and one long file of many.
- :func:`pdf_retrieval`: nDCG@10 of ``eval retrieval``'s code (``evaluate_retrieval``) with
  all-MiniLM-L6-v2 on a SciFact subset (every document the test queries judge relevant, then the
  corpus's first other abstracts as distractors, up to ``abstracts``), once with each abstract as
  text (title, a space, text: as ``eval`` reads BEIR) and once as the text our PDF reader reads back
  from that abstract printed to PDF, one file each.

The PDFs are printed once into ``--work`` (default: a folder under the system's temporary folder) and
reused; SciFact is read from the shared data folder and never copied into the repository.

    .venv/bin/python benchmarks/ingest_formats.py [--files 200] [--abstracts 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DATA = Path(os.environ.get("QZHOU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CHROMIUM = Path("/usr/bin/chromium")
LONG_FILE_ABSTRACTS = 400
"""Abstracts in the one long PDF (about a hundred pages)."""


# -- the PDFs -------------------------------------------------------------------------------------------


def scifact_subset(abstracts: int) -> tuple[list[dict[str, str]], dict[str, str], dict[str, dict[str, int]]]:
    """The corpus records (every judged-relevant one first, then distractors in corpus order), the
    judged queries and their judgements."""
    from qzhou_plugins.evaluation.datasets import read_qrels

    folder = DATA / "scifact"
    if not (folder / "corpus.jsonl").is_file():
        sys.exit(f"error: the benchmark reads SciFact from {folder}, which is absent")
    qrels = read_qrels(folder / "qrels.tsv")
    relevant = {doc for judged in qrels.values() for doc in judged}
    records = [json.loads(line) for line in (folder / "corpus.jsonl").open(encoding="utf-8")]
    chosen = [r for r in records if r["_id"] in relevant]
    chosen += [r for r in records if r["_id"] not in relevant][: max(abstracts - len(chosen), 0)]
    queries = {}
    for line in (folder / "queries.jsonl").open(encoding="utf-8"):
        query = json.loads(line)
        if query["_id"] in qrels:
            queries[query["_id"]] = query["text"]
    return chosen, queries, qrels


def abstract_html(records: Sequence[dict[str, str]]) -> str:
    body = "".join(f"<h1>{html.escape(r['title'])}</h1><p>{html.escape(r['text'])}</p>" for r in records)
    return f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}</body></html>"


def print_pdfs(jobs: Sequence[tuple[Path, str]]) -> None:
    """Print each (path, HTML) not printed yet with Debian's headless Chromium (through Playwright,
    one browser for all: a process per file would take seconds each)."""
    todo = [(path, page) for path, page in jobs if not path.is_file()]
    if not todo:
        return
    if not CHROMIUM.exists():
        sys.exit(f"error: the PDFs are printed by {CHROMIUM}, which is absent")
    from playwright.sync_api import sync_playwright

    print(f"Printing {len(todo)} PDF(s) with headless Chromium...", file=sys.stderr)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page()
        for path, content in todo:
            page.set_content(content)
            page.pdf(path=str(path.with_suffix(".part")))
            path.with_suffix(".part").rename(path)
        browser.close()


def printed_abstracts(work: Path, records: Sequence[dict[str, str]]) -> dict[str, Path]:
    """Each abstract printed to its own PDF: document id -> file."""
    folder = work / "abstracts"
    folder.mkdir(parents=True, exist_ok=True)
    files = {r["_id"]: folder / f"{r['_id']}.pdf" for r in records}
    print_pdfs([(files[r["_id"]], abstract_html([r])) for r in records])
    return files


def long_pdf(work: Path) -> Path:
    """Many abstracts printed as one long PDF."""
    path = work / f"scifact-{LONG_FILE_ABSTRACTS}.pdf"
    with (DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8") as handle:
        records = [json.loads(line) for line, _ in zip(handle, range(LONG_FILE_ABSTRACTS), strict=False)]
    print_pdfs([(path, abstract_html(records))])
    return path


# -- (a) pages per second -------------------------------------------------------------------------------


def read_ours(files: Sequence[Path]) -> int:
    from qzhou_plugins.documents import reader_for

    return sum(len(reader_for(file)(file).sections) for file in files)


def read_llama_index(files: Sequence[Path]) -> int:
    from llama_index.core import SimpleDirectoryReader

    return len(SimpleDirectoryReader(input_files=[str(f) for f in files]).load_data())


def read_langchain(files: Sequence[Path]) -> int:
    from langchain_community.document_loaders import PyPDFLoader

    return sum(len(PyPDFLoader(str(file)).load()) for file in files)


READERS: dict[str, Callable[[Sequence[Path]], int]] = {
    "ours (PDFium)": read_ours,
    "LlamaIndex SimpleDirectoryReader (pypdf)": read_llama_index,
    "LangChain PyPDFLoader (pypdf)": read_langchain,
}


def pdf_extraction(files: Sequence[Path], repeats: int = 3) -> dict[str, Any]:
    """Pages per second of each reader on ``files`` (best of ``repeats``, runs alternated), and the
    ratio of ours to each; a reader whose package is missing is left out with the reason."""
    best: dict[str, float] = {}
    pages: dict[str, int] = {}
    missing: dict[str, str] = {}
    for _ in range(repeats):
        for name, read in READERS.items():
            if name in missing:
                continue
            started = time.perf_counter()
            try:
                pages[name] = read(files)
            except ImportError as error:
                missing[name] = str(error)
                continue
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    rates = {name: pages[name] / seconds for name, seconds in best.items()}
    ours = rates["ours (PDFium)"]
    return {
        "files": len(files),
        "pages": pages,
        "pages_per_second": rates,
        "ratio_ours_to": {name: ours / rate for name, rate in rates.items() if name != "ours (PDFium)"},
        "missing": missing,
    }


# -- (b) nDCG@10, PDF against text ----------------------------------------------------------------------


def pdf_retrieval(work: Path, abstracts: int = 1000) -> dict[str, Any]:
    """nDCG@10 with all-MiniLM-L6-v2 of the abstracts as text and as read back from their PDFs, and how
    many PDFs gave back exactly the abstract's words (the rest differ where a line broke at a dash)."""
    from qzhou_plugins import DEMO_MODEL, Encoder
    from qzhou_plugins.documents import join_text_fields, reader_for
    from qzhou_plugins.evaluation import evaluate_retrieval
    from qzhou_plugins.evaluation.datasets import RetrievalDataset

    records, queries, qrels = scifact_subset(abstracts)
    files = printed_abstracts(work, records)
    as_text = {r["_id"]: join_text_fields([r["title"], r["text"]]) for r in records}
    as_pdf = {}
    for doc_id, file in files.items():
        reading = reader_for(file)(file)
        as_pdf[doc_id] = reading.joiner.join(section.text for section in reading.sections)
    encoder = Encoder(model=DEMO_MODEL)
    scores = {}
    for name, corpus in (("text", as_text), ("pdf", as_pdf)):
        dataset = RetrievalDataset(name=f"scifact-{name}", corpus=corpus, queries=queries, qrels=qrels)
        scores[name] = evaluate_retrieval(encoder, dataset, show_progress=False).ndcg_at_10
    same = sum(" ".join(as_pdf[doc].split()) == " ".join(as_text[doc].split()) for doc in as_text)
    return {
        "documents": len(records),
        "same_words": same,
        "relevant_documents": len({doc for judged in qrels.values() for doc in judged}),
        "queries": len(queries),
        "ndcg_at_10_text": scores["text"],
        "ndcg_at_10_pdf": scores["pdf"],
        "difference": scores["pdf"] - scores["text"],
    }


# -- printing -------------------------------------------------------------------------------------------


def print_extraction(title: str, row: dict[str, Any]) -> None:
    print(f"\n{title}: {row['files']} file(s)")
    for name, rate in row["pages_per_second"].items():
        ratio = row["ratio_ours_to"].get(name)
        versus = f"   ours is {ratio:.1f}x" if ratio is not None else ""
        print(f"  {name:<42} {row['pages'][name]:>5} pages  {rate:>8.1f} pages/s{versus}")
    for name, why in row["missing"].items():
        print(f"  {name:<42} skipped: {why}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200, help="one-abstract PDFs read for pages/s")
    parser.add_argument("--abstracts", type=int, default=1000, help="documents of the retrieval subset")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "qzhou-bench-pdf")
    parser.add_argument("--skip-retrieval", action="store_true", help="pages/s only (no model)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    records, _queries, _qrels = scifact_subset(max(args.abstracts, args.files))
    files = list(printed_abstracts(args.work, records[: args.files]).values())
    print_extraction("PDF text extraction, one abstract per file", pdf_extraction(files, args.repeats))
    print_extraction(
        "PDF text extraction, one long file", pdf_extraction([long_pdf(args.work)], args.repeats)
    )
    if not args.skip_retrieval:
        row = pdf_retrieval(args.work, args.abstracts)
        print(
            f"\nSciFact printed to PDF ({row['documents']} abstracts, one file each: the "
            f"{row['relevant_documents']} judged relevant, then distractors in corpus order; "
            f"{row['queries']} queries; all-MiniLM-L6-v2)"
        )
        print(
            f"  read back with the same words (white space aside): {row['same_words']} of {row['documents']}"
        )
        print(f"  nDCG@10 as text {row['ndcg_at_10_text']:.4f}, as PDF {row['ndcg_at_10_pdf']:.4f}, "
              f"difference {row['difference']:+.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
