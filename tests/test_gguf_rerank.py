"""GGUF rerankers: the export (read back with the ``gguf`` package), the scores llama.cpp gives against
the torch reranker, and GGUF files written by llama.cpp's own converter recognised as their family.

The llama.cpp side runs in one child process in .venv-llama (tests/llama_child.py, ``rerank`` mode):
a crash there fails these tests instead of killing pytest. The files are exported once per module
from tiny random checkpoints: a BERT cross-encoder whose segment rows are equal (llama.cpp gives
every token segment 0), an XLM-RoBERTa-format one and a Qwen3-Reranker-shaped LLM reranker.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from conftest import REPO
from qzhou_plugins import Encoder, Reranker
from qzhou_plugins.backends.llama_cpp import keys
from qzhou_plugins.cli import main
from qzhou_plugins.gguf import GGUFExportError, export_gguf
from servers import llama_environment, llama_python

CHILD = Path(__file__).with_name("llama_child.py")
QUERIES = ["which plant does tea come from?"] * 4 + ["how hot should green tea water be?"] * 4
DOCUMENTS = [
    "Camellia sinensis is an evergreen shrub whose leaves are made into tea.",
    "Green tea is brewed at 70 to 80 degrees, black tea with boiling water.",
    "The kettle whistles when the water boils.",
    "Coffee beans are roasted seeds of the coffee plant.",
] * 2
TEXTS = ["Green tea is brewed at 70-80 °C.", "Which plant does tea come from?"]
QWEN3_RERANK_PROMPT = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    "<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
    "<Query>: {query}\n<Document>: {document}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
)
"""The ``rerank`` chat template llama.cpp's converter writes for Qwen3-Reranker (conversion/qwen.py)."""
LLM_KEYS = (
    "qwen3.pooling_type",
    "tokenizer.chat_template.rerank",
    "tokenizer.ggml.add_eos_token",
    keys.RERANK_KIND,
)
F16_SCORE_GAP = 2e-3
"""Max |score difference| of an f16 file against the torch reranker on these short pairs (probabilities;
measured up to 7e-4; benchmarks/bench_gguf.py --rerankers measures longer ones)."""

pytestmark = pytest.mark.timeout(3600)  # the first run may compile llama-cpp-python into .venv-llama


@functools.cache
def read(path: Path) -> gguf.GGUFReader:
    """One parse per file: the reader takes seconds over Qwen's 151,665 tokens and 151,387 merges."""
    return gguf.GGUFReader(path)


def value(path: Path, key: str) -> Any:
    field = read(path).get_field(key)
    return None if field is None else field.contents()


def as_llama_cpp_converted(ours: Path, out: Path, changes: dict[str, Any]) -> Path:
    """Our export rewritten with the keys llama.cpp's converter writes instead: none of ours, and for a
    Qwen3-Embedding no attention key, <|endoftext|> as the end token appended (its tokenizer's
    post-processor; gguf-py SpecialVocab) and <|im_end|> as end of turn (``changes``)."""
    reader = gguf.GGUFReader(ours)
    architecture = str(reader.get_field("general.architecture").contents())
    writer = gguf.GGUFWriter(out, architecture)
    for name, field in reader.fields.items():
        if name.startswith(("GGUF.", "general.architecture", "qzhou.")) or name in changes:
            continue
        sub_type = field.types[1] if len(field.types) > 1 else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type)
    for name, (kind, content) in changes.items():
        if content is not None:
            writer.add_key_value(name, content, kind)
    for tensor in reader.tensors:
        shape = tuple(int(n) for n in reversed(tensor.shape))
        writer.add_tensor(tensor.name, tensor.data, raw_shape=shape, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@pytest.fixture(scope="module")
def sources(
    tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder_path: str, tiny_llm_reranker_path: str,
    minilm_path: str,
) -> dict[str, str]:  # fmt: skip
    from qzhou_plugins.testing import build_xlmr_cross_encoder_checkpoint, one_segment_cross_encoder

    root = tmp_path_factory.mktemp("gguf-rerank-sources")
    return {
        "bert": str(one_segment_cross_encoder(tiny_cross_encoder_path, root / "bert")),
        "xlmr": str(build_xlmr_cross_encoder_checkpoint(root / "xlmr", minilm_path)),
        "llm": tiny_llm_reranker_path,
    }


@pytest.fixture(scope="module")
def files(sources: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gguf-rerank")
    return {label: export_gguf(source, folder / f"{label}.gguf") for label, source in sources.items()}


@pytest.fixture(scope="module")
def converted(
    tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer_dir: Path, minilm_path: str
) -> dict[str, tuple[str, Path]]:
    """label -> (checkpoint, its file as llama.cpp's converter writes it)."""
    from qzhou_plugins.testing_families import build_bert_style_folder, build_qwen3_embedding_checkpoint

    root = tmp_path_factory.mktemp("converted")
    qwen3 = str(build_qwen3_embedding_checkpoint(root, qwen_tokenizer_dir))
    bge = str(build_bert_style_folder(root, minilm_path, "bge"))
    V = gguf.GGUFValueType
    qwen3_changes = {
        "qwen3.attention.causal": (V.BOOL, None),
        "tokenizer.ggml.eos_token_id": (V.UINT32, 151643),
        "tokenizer.ggml.eot_token_id": (V.UINT32, 151645),
        "tokenizer.ggml.add_eos_token": (V.BOOL, True),
    }
    return {
        "qwen3": (qwen3, as_llama_cpp_converted(export_gguf(qwen3, root / "q.gguf"), root / "qwen3.gguf",
                                                qwen3_changes)),
        "bge": (bge, as_llama_cpp_converted(export_gguf(bge, root / "b.gguf"), root / "bge.gguf", {})),
    }  # fmt: skip


@pytest.fixture(scope="module")
def child(files: dict[str, Path], converted: dict[str, tuple[str, Path]], gguf_file: Any) -> dict[str, Any]:
    """Everything the llama.cpp side computed, in one run of the child process."""
    payload = {
        "mode": "rerank",
        "rerankers": {label: str(path) for label, path in files.items()},
        "converted": {label: str(path) for label, (_, path) in converted.items()},
        "embedder": str(gguf_file("minilm", "f16")),
        "queries": QUERIES,
        "documents": DOCUMENTS,
        "instruction": "Find the sentence about brewing temperatures",
        "llm_keys": LLM_KEYS,
        "texts": TEXTS,
        "text_file": str(REPO / "examples" / "documents" / "brewing.txt"),
    }
    done = subprocess.run(
        [str(llama_python()), str(CHILD), json.dumps(payload)],
        capture_output=True,
        text=True,
        env=llama_environment(),
        timeout=900,
    )
    assert done.returncode == 0, f"the llama.cpp child exited with {done.returncode}:\n{done.stderr[-4000:]}"
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("result "))
    return dict(json.loads(line.removeprefix("result ")))


# -- the files -------------------------------------------------------------------------------------


def test_a_cross_encoder_is_written_for_rank_pooling(files: dict[str, Path]) -> None:
    """BERT's pooler and classifier as llama.cpp's cls and cls.output (not an embedder's pooler:
    "tensor 'cls.weight' has wrong shape"), XLM-R's positions from its padding offset on."""
    for label in ("bert", "xlmr"):
        reader = read(files[label])
        shapes = {tensor.name: tuple(int(n) for n in tensor.shape) for tensor in reader.tensors}
        assert (shapes["cls.weight"], shapes["cls.output.weight"], shapes["cls.output.bias"]) == (
            (64, 64), (64, 1), (1,)
        )  # fmt: skip
        assert value(files[label], "bert.pooling_type") == gguf.PoolingType.RANK
        assert value(files[label], keys.RERANK_KIND) == "cross-encoder"
        assert value(files[label], keys.RERANK_ACTIVATION) == "sigmoid"
        assert value(files[label], keys.FORMAT) == keys.FORMAT_VERSION  # older readers refuse it
    assert shapes["position_embd.weight"] == (64, 512)  # XLM-R's 514 rows less pad + 1
    assert value(files["xlmr"], "tokenizer.ggml.add_sep_token") is True  # <s> q </s></s> d </s>
    assert value(files["bert"], "tokenizer.ggml.add_sep_token") is False  # [CLS] q [SEP] d [SEP]


def test_an_llm_reranker_is_written_as_llama_cpps_converter_writes_it(child: dict[str, Any]) -> None:
    """Read back by llama.cpp itself (a Python read of Qwen's 151,665 tokens takes half a minute): rank
    pooling, a yes/no head of two outputs, the rerank prompt, nothing added around it. That the head
    holds the yes and no rows shows in the scores, equal to the torch reranker's."""
    assert child["llm_keys"] == {
        "qwen3.pooling_type": "4",
        "tokenizer.chat_template.rerank": QWEN3_RERANK_PROMPT,
        "tokenizer.ggml.add_eos_token": "false",
        keys.RERANK_KIND: "llm",
    }
    assert child["llm_outputs"] == 2  # the labels yes and no (llama.cpp lists no array in its metadata)


def test_what_llama_cpp_would_score_otherwise_is_refused(
    tmp_path: Path, tiny_cross_encoder_path: str, tiny_llm_reranker_path: str
) -> None:
    with pytest.raises(GGUFExportError, match="tells the query from the candidate by segment"):
        export_gguf(tiny_cross_encoder_path, tmp_path / "bert.gguf")
    with pytest.raises(GGUFExportError, match=r"family='bert'.*has no embedder family"):
        export_gguf(tiny_cross_encoder_path, tmp_path / "bert.gguf", family="bert")
    folder = Path(shutil.copytree(tiny_cross_encoder_path, tmp_path / "two-labels"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "id2label": {"0": "a", "1": "b"}}))
    with pytest.raises(GGUFExportError, match="2 labels"):
        export_gguf(folder, tmp_path / "two.gguf")
    assert list(tmp_path.glob("*.gguf*")) == []


def test_export_family_is_checked_against_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "gguf", "all-MiniLM-L6-v2", str(tmp_path / "m.gguf"), "--family", "qzhou"]) == 1
    assert "qzhou" in capsys.readouterr().err
    assert main(["export", "gguf", "all-MiniLM-L6-v2", str(tmp_path / "m.gguf"), "--family", "bert"]) == 0
    assert value(tmp_path / "m.gguf", keys.FAMILY) == "bert"


# -- on llama.cpp ----------------------------------------------------------------------------------


def test_gguf_rerankers_score_like_the_torch_rerankers(
    child: dict[str, Any], sources: dict[str, str]
) -> None:
    for label, source in sources.items():
        reference = Reranker(model=source)
        torch_scores = reference.score_pairs(QUERIES, DOCUMENTS)
        scores = np.asarray(child["scores"][label])
        assert child["facts"][label] == [reference.kind, reference.score_scale]
        assert np.abs(scores - torch_scores).max() <= F16_SCORE_GAP, label
        for first in (0, 4):  # each query's candidates in the torch reranker's order
            block = slice(first, first + 4)
            assert list(np.argsort(-scores[block])) == list(np.argsort(-torch_scores[block])), label


def test_gguf_cross_encoders_score_like_sentence_transformers(
    child: dict[str, Any], sources: dict[str, str]
) -> None:
    from sentence_transformers import CrossEncoder

    for label in ("bert", "xlmr"):
        reference = CrossEncoder(sources[label], device="cpu").predict(
            list(zip(QUERIES, DOCUMENTS, strict=True))
        )
        assert np.abs(np.asarray(child["scores"][label]) - reference).max() <= F16_SCORE_GAP, label


def test_the_pairs_are_the_torch_rerankers_tokens(child: dict[str, Any], sources: dict[str, str]) -> None:
    for label in ("bert", "xlmr"):
        ids, _ = Reranker(model=sources[label]).backend._pair_tokens(QUERIES[:1], DOCUMENTS[:1])  # type: ignore[union-attr]
        assert child["tokens"][label] == ids[0]
    llm = Reranker(model=sources["llm"]).backend
    assert child["tokens"]["llm"] == llm._llm_tokens(QUERIES[:1], DOCUMENTS[:1], None)[0]  # type: ignore[union-attr]


def test_an_llm_rerankers_instruction_reaches_the_file(
    child: dict[str, Any], sources: dict[str, str]
) -> None:
    instruction = "Find the sentence about brewing temperatures"
    torch_scores = Reranker(model=sources["llm"]).score_pairs(QUERIES, DOCUMENTS, instruction=instruction)
    assert np.abs(np.asarray(child["instructed"]) - torch_scores).max() <= F16_SCORE_GAP
    assert np.abs(np.asarray(child["instructed"]) - np.asarray(child["scores"]["llm"])).max() > 1e-4


def test_a_rerankers_file_is_no_embedder_and_an_embedders_file_no_cross_encoder(
    child: dict[str, Any],
) -> None:
    assert "is a reranker's GGUF file (rank pooling)" in child["embedding_refused"]
    assert child["embedder_kind"] == "embedding"


def test_the_command_line_reranks_with_a_gguf_file(child: dict[str, Any]) -> None:
    cli = child["cli"]
    assert (cli["index"], cli["query"]) == (0, 0), cli["printed"]
    assert "(cross-encoder)" in cli["printed"] and "bert.gguf" in cli["printed"]


def test_files_from_llama_cpps_converter_are_recognised_as_their_family(
    child: dict[str, Any], converted: dict[str, tuple[str, Path]]
) -> None:
    qwen3, bge = child["converted"]["qwen3"], child["converted"]["bge"]
    assert (qwen3["family"], qwen3["pooling"]) == ("qwen3-embedding", "last")
    assert (bge["family"], bge["pooling"]) == ("bert", "cls")
    assert qwen3["prefixes"][0].startswith("Instruct: ")  # the family's instructions, from no key of ours
    for label, run in (("qwen3", qwen3), ("bge", bge)):
        reference = Encoder(model=converted[label][0]).encode_documents(TEXTS)
        a, b = np.asarray(run["documents"]), reference
        cosines = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosines.min() >= 0.9999, label
