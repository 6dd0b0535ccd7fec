"""The llama.cpp side of tests/test_llama_cpp.py: ``python llama_child.py JSON``, run in .venv-llama.

Everything that touches llama.cpp runs here, in one process per test module, so that a crash of
llama.cpp (an abort, a segfault) fails the tests instead of killing pytest. It prints one
``result <json>`` line: vectors, token ids, what the contexts report, error messages; the tests
compare them with the torch encoder and the Hugging Face tokenizer in their own process.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qzhou_plugins import Encoder
from qzhou_plugins.backends.llama_cpp import context as context_module
from qzhou_plugins.backends.llama_cpp import library


def rows(vectors: np.ndarray) -> list[list[float]]:
    return np.asarray(vectors, dtype=np.float64).round(7).tolist()


def context_report(encoder: Encoder) -> dict[str, Any]:
    """What llama.cpp's context says about itself."""
    context, llama = encoder.backend.context, library.llama_cpp()
    return {
        "causal_reported": context.reported_causal,
        "pooling_type": int(llama.llama_pooling_type(context.pointer)),
        "n_batch": int(llama.llama_n_batch(context.pointer)),
        "n_ubatch": int(llama.llama_n_ubatch(context.pointer)),
        "n_threads": int(llama.llama_n_threads(context.pointer)),
        "n_threads_batch": int(llama.llama_n_threads_batch(context.pointer)),
    }


def plain_llama(path: str, texts: list[str]) -> list[list[float]]:
    """llama-cpp-python as anyone would use it: default attention and pooling, from the file alone."""
    import llama_cpp

    model = llama_cpp.Llama(path, embedding=True, verbose=False)
    vectors = np.asarray(model.embed(texts, normalize=True))
    model.close()
    return rows(vectors)


def backend_runs(files: dict[str, str], texts: list[str]) -> dict[str, Any]:
    """Our backend on every file: vectors of both sides, the facts, the context's report."""
    found: dict[str, Any] = {}
    for label, path in files.items():
        encoder = Encoder(model=path)
        facts = encoder.facts
        found[label] = {
            "queries": rows(encoder.encode_queries(texts)),
            "documents": rows(encoder.encode_documents(texts)),
            "prefixes": list(encoder.prefixes()),
            "sts_prefixes": list(encoder.prefixes("sts")),
            "facts": {
                "family": facts.family,
                "pooling": facts.pooling,
                "max_length": facts.max_length,
                "vector_family": facts.vector_family,
                "source_model": facts.source_model,
                "gguf_type": encoder.backend.gguf_type,
            },
            "context": context_report(encoder),
        }
    return found


FILE_KEYS = (
    "general.architecture",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.eos_token_id",
    "qzhou.family",
    "qzhou.format_version",
    "qzhou.prompt.saved_prompts",
)


def family_runs(files: dict[str, str], texts: list[str]) -> dict[str, Any]:
    """The families beyond QZhou and MiniLM: what :func:`backend_runs` finds, the tokens of each text,
    and the keys of the file that decide attention, pooling and the end token."""
    found = backend_runs(files, texts)
    for label, path in files.items():
        encoder = Encoder(model=path)
        metadata = encoder.backend.model.metadata
        architecture = metadata["general.architecture"]
        wanted = (*FILE_KEYS, f"{architecture}.attention.causal", f"{architecture}.pooling_type")
        found[label]["metadata"] = {key: metadata.get(key) for key in wanted}
        found[label]["tokens"] = encoder.backend.tokenize(texts)
        found[label]["fingerprint"] = encoder.facts.fingerprint
    return found


def matryoshka(path: str, refused: str, texts: list[str]) -> dict[str, Any]:
    """``dimensions`` on a GGUF file of a Matryoshka family, and on one of a family without it."""
    encoder = Encoder(model=path, dimensions=32)
    found: dict[str, Any] = {
        "documents": rows(encoder.encode_documents(texts)),
        "queries": rows(encoder.encode_queries(texts)),
        "dimension": encoder.facts.dimension,
        "fingerprint": encoder.facts.fingerprint,
    }
    try:
        Encoder(model=refused, dimensions=32)
        found["refused"] = "accepted"
    except Exception as error:
        found["refused"] = f"{type(error).__name__}: {error}"
    return found


def causal_run(path: str, texts: list[str]) -> dict[str, Any]:
    encoder = Encoder(model=path, bidirectional=False)
    return {"documents": rows(encoder.encode_documents(texts)), "context": context_report(encoder)}


def tokens(files: dict[str, str], texts: list[str]) -> dict[str, list[list[int]]]:
    return {label: Encoder(model=path).backend.tokenize(texts) for label, path in files.items()}


def truncation(path: str, text: str) -> dict[str, Any]:
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("qzhou_plugins").addHandler(handler)
    encoder = Encoder(model=path, max_length=16)
    vector = encoder.encode_documents([text, "short"])
    logging.getLogger("qzhou_plugins").removeHandler(handler)
    return {"warnings": records, "tokens": encoder.backend.tokenize([text])[0], "vector": rows(vector[:1])}


def batching(path: str, texts: list[str]) -> dict[str, Any]:
    """Several texts per decode under a small budget, and the same vectors one text at a time."""
    decodes: list[int] = []
    original = context_module.EmbeddingContext.embed

    def counted(self: Any, sequences: list[list[int]]) -> np.ndarray:
        decodes.append(len(sequences))
        return original(self, sequences)

    context_module.EmbeddingContext.embed = counted  # type: ignore[method-assign]
    try:
        encoder = Encoder(model=path, batch_tokens=64, threads=1)
        together = encoder.encode_documents(texts)
        alone = np.concatenate([encoder.encode_documents([text]) for text in texts])
    finally:
        context_module.EmbeddingContext.embed = original  # type: ignore[method-assign]
    return {
        "decodes": decodes[: -len(texts)],
        "cosines": (together * alone).sum(axis=1).tolist(),
        "context": context_report(encoder),
    }


def quantized(source: str, minilm_q8: str, work: Path, texts: list[str]) -> dict[str, Any]:
    """q4_k_m made by llama.cpp's quantizer; both quantised types loaded with extra buffer types off."""
    from qzhou_plugins.gguf import export_gguf

    q4 = export_gguf(source, work / "minilm-q4_k_m.gguf", "q4_k_m")
    loads: list[bool] = []
    llama = library.llama_cpp()
    original = llama.llama_model_load_from_file

    def spied(path: bytes, params: Any) -> Any:
        loads.append(bool(params.use_extra_bufts))
        return original(path, params)

    llama.llama_model_load_from_file = spied
    try:
        found = backend_runs({"q8_0": minilm_q8, "q4_k_m": str(q4)}, texts)
    finally:
        llama.llama_model_load_from_file = original
    return {"runs": found, "use_extra_bufts": loads}


def chroma(f16: str, q8: str, work: Path) -> dict[str, str]:
    """Which openings of a collection are refused: torch-made vs q8_0 queries, and the other way."""
    from qzhou_plugins.chroma import QZhouCollection

    texts = ["Green tea is brewed at 70-80 °C.", "Black tea takes boiling water.", "Coffee is not a tea."]
    outcome: dict[str, str] = {}

    def attempt(label: str, open_: Callable[[], Any]) -> None:
        try:
            hits = open_().query("green tea temperature", n_results=1)[0].hits
            outcome[label] = "opened: " + hits[0].document
        except Exception as error:
            outcome[label] = f"{type(error).__name__}: {error}"

    db = str(work / "chroma")
    QZhouCollection.open("torch-made", path=db, model="all-MiniLM-L6-v2").add(texts)
    QZhouCollection.open("q8-made", path=db, model=q8).add(texts)
    attempt("torch_made_f16", lambda: QZhouCollection.open("torch-made", path=db, model=f16))
    attempt("torch_made_q8_0", lambda: QZhouCollection.open("torch-made", path=db, model=q8))
    attempt("q8_made_torch", lambda: QZhouCollection.open("q8-made", path=db, model="all-MiniLM-L6-v2"))
    attempt("q8_made_recorded", lambda: QZhouCollection.open("q8-made", path=db))
    return outcome


def command_line(path: str, documents: str, work: Path) -> dict[str, Any]:
    from contextlib import redirect_stdout
    from io import StringIO

    from qzhou_plugins.cli import main

    db = str(work / "cli-db")
    index = main(["index", documents, "--collection", "tea", "--db", db, "--model", path])
    printed = StringIO()
    with redirect_stdout(printed):
        question = "How hot should the water be for green tea?"
        query = main(["query", question, "--collection", "tea", "--db", db])
    return {"index": index, "query": query, "printed": printed.getvalue()}


def refusals(path: str, work: Path) -> dict[str, str]:
    found = {}
    cases = {
        "dtype": {"dtype": "bfloat16"},
        "missing": {"model": str(work / "none.gguf")},
        "too_long": {"max_length": 1_000_000},
        "family": {"family": "qwen3-embedding"},
    }
    for label, options in cases.items():
        try:
            Encoder(**{"model": path, **options})
            found[label] = "accepted"
        except Exception as error:
            found[label] = f"{type(error).__name__}: {error}"
    return found


def main(payload: dict[str, Any]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="llama-child-"))
    texts, files = payload["texts"], payload["files"]
    families = {label: files[label] for label in payload["families"]}
    return {
        "families": family_runs(families, texts + payload["tricky_texts"]),
        "matryoshka": matryoshka(files["qwen3_f16"], files["qzhou_f16"], texts),
        "plain": plain_llama(files["qzhou_f16"], texts),
        "runs": backend_runs({k: files[k] for k in ("qzhou_f16", "minilm_f16")}, texts),
        "causal": causal_run(files["qzhou_f16"], texts),
        "tokens": tokens({k: files[k] for k in ("qzhou_f16", "minilm_f16")}, payload["tricky_texts"]),
        "truncation": truncation(files["minilm_f16"], payload["long_text"]),
        "batching": batching(files["qzhou_f16"], payload["batch_texts"]),
        "quantized": quantized("all-MiniLM-L6-v2", files["minilm_q8_0"], work, texts),
        "chroma": chroma(files["minilm_f16"], files["minilm_q8_0"], work),
        "cli": command_line(files["minilm_f16"], payload["documents"], work),
        "refusals": refusals(files["minilm_f16"], work),
    }


def rerank_main(payload: dict[str, Any]) -> dict[str, Any]:
    """tests/test_gguf_rerank.py: GGUF rerankers scored here, files from llama.cpp's converter read."""
    from qzhou_plugins import Reranker

    queries, documents = payload["queries"], payload["documents"]
    found: dict[str, Any] = {"scores": {}, "facts": {}, "tokens": {}}
    for label, path in payload["rerankers"].items():
        reranker = Reranker(model=path)
        found["scores"][label] = reranker.score_pairs(queries, documents).tolist()
        found["facts"][label] = [reranker.kind, reranker.score_scale]
        found["tokens"][label] = reranker.backend.pair_tokens(queries[:1], documents[:1])[0]  # type: ignore[union-attr]
    llm = Reranker(model=payload["rerankers"]["llm"])
    metadata = llm.backend.model.metadata  # type: ignore[union-attr]
    found["llm_keys"] = {key: metadata.get(key) for key in payload["llm_keys"]}
    found["llm_outputs"] = int(library.llama_cpp().llama_model_n_cls_out(llm.backend.model.pointer))  # type: ignore[union-attr]
    found["instructed"] = llm.score_pairs(queries, documents, instruction=payload["instruction"]).tolist()
    found["embedder_kind"] = Reranker(model=payload["embedder"]).kind
    try:
        Encoder(model=payload["rerankers"]["bert"])
    except Exception as error:
        found["embedding_refused"] = str(error)
    found["converted"] = {}
    for label, path in payload["converted"].items():
        encoder = Encoder(model=path)
        found["converted"][label] = {
            "family": encoder.facts.family,
            "pooling": encoder.facts.pooling,
            "prefixes": list(encoder.prefixes()),
            "documents": rows(encoder.encode_documents(payload["texts"])),
        }
    found["cli"] = rerank_command_line(
        payload["embedder"], payload["rerankers"]["bert"], payload["text_file"]
    )
    return found


def rerank_command_line(embedder: str, reranker: str, documents: str) -> dict[str, Any]:
    """``index`` then ``query --rerank N --rerank-model FILE.gguf``: the command line's reranking path."""
    from contextlib import redirect_stdout
    from io import StringIO

    from qzhou_plugins.cli import main as cli

    db = tempfile.mkdtemp(prefix="rerank-cli-")
    index = cli(["index", documents, "--collection", "tea", "--db", db, "--model", embedder])
    printed = StringIO()
    with redirect_stdout(printed):
        question = "How hot should the water be for green tea?"
        query = cli(["query", question, "--collection", "tea", "--db", db, "-k", "2", "--rerank", "3",
                     "--rerank-model", reranker])  # fmt: skip
    return {"index": index, "query": query, "printed": printed.getvalue()}


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    result = rerank_main(request) if request.get("mode") == "rerank" else main(request)
    print("result " + json.dumps(result))
