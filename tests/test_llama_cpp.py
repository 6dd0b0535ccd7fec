"""The llama.cpp backend behind the seam, against the torch encoder and the Hugging Face tokenizer.

All llama.cpp work runs in one child process in .venv-llama (tests/llama_child.py): a crash there
fails these tests instead of killing pytest. This process holds the references: the torch encoder's
vectors (bidirectional and causal), the Hugging Face tokens. f16 must match torch to min cosine
0.9999; plain ``llama_cpp.Llama`` with default settings must give the bidirectional vectors from the
exported file alone. The families beyond QZhou (Qwen3-Embedding: causal, last token, end token
appended; gte-Qwen2: bidirectional, last token; a BGE-style folder: CLS pooling, a saved prompt) are
exported from small random checkpoints in their published layouts and held to the same floor.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO
from qzhou_plugins import Encoder, ModelLoadError
from qzhou_plugins.testing_families import QWEN3_QUERY_PROMPT
from servers import llama_environment, llama_python

CHILD = Path(__file__).with_name("llama_child.py")
TEXTS = [
    "Green tea is brewed at 70-80 °C, black tea with boiling water.",
    "Which plant does tea come from?",
    "Camellia sinensis is an evergreen shrub whose leaves are made into tea.",
    "绿茶的冲泡温度是多少？",
]
TRICKY = [
    "a </s> b <|im_start|> c",
    "[CLS] x [SEP] y",
    "Thé à la menthe, ünïcödé 😀 中文",
    " spaces\n\tand tabs ",
]
LONG = "Tea is a drink made from the leaves of an evergreen shrub, grown in Asia for millennia. " * 8
REFERENCE = 0.9999
"""Min cosine for vectors called interchangeable with the torch encoder's (f16)."""

FAMILIES = ("qwen3_f16", "gte_qwen2_f16", "bge_f16")
"""The files of the families beyond QZhou and MiniLM, each exported from :func:`family_sources`."""
ENDOFTEXT_ID = 151643

pytestmark = pytest.mark.timeout(3600)  # the first run may compile llama-cpp-python into .venv-llama


@pytest.fixture(scope="module")
def family_sources(
    tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer_dir: Path, minilm_path: str
) -> dict[str, str]:
    """Small random checkpoints of the families, in their published layouts (label -> folder)."""
    from qzhou_plugins.testing_families import (
        build_bert_style_folder,
        build_gte_qwen2_checkpoint,
        build_qwen3_embedding_checkpoint,
    )

    root = tmp_path_factory.mktemp("families")
    return {
        "qwen3_f16": str(build_qwen3_embedding_checkpoint(root, qwen_tokenizer_dir)),
        "gte_qwen2_f16": str(build_gte_qwen2_checkpoint(root, qwen_tokenizer_dir)),
        "bge_f16": str(build_bert_style_folder(root, minilm_path, "bge")),
    }


@pytest.fixture(scope="module")
def family_encoders(family_sources: dict[str, str]) -> dict[str, Encoder]:
    """The torch encoder of each family's checkpoint: the reference for its GGUF file."""
    return {label: Encoder(model=folder) for label, folder in family_sources.items()}


@pytest.fixture(scope="module")
def child(
    gguf_file: Callable[..., Path], family_sources: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Everything the llama.cpp side computed, in one run of the child process."""
    from qzhou_plugins.gguf import export_gguf

    python = llama_python()
    folder = tmp_path_factory.mktemp("family-gguf")
    payload = {
        "files": {
            "qzhou_f16": str(gguf_file("qzhou", "f16")),
            "minilm_f16": str(gguf_file("minilm", "f16")),
            "minilm_q8_0": str(gguf_file("minilm", "q8_0")),
        }
        | {
            label: str(export_gguf(source, folder / f"{label}.gguf"))
            for label, source in family_sources.items()
        },
        "families": FAMILIES,
        "texts": TEXTS,
        "tricky_texts": TRICKY,
        "long_text": LONG,
        "batch_texts": [" ".join(TEXTS[: 1 + i % 4]) * (1 + i % 3) for i in range(12)],
        "documents": str(REPO / "examples" / "documents" / "brewing.txt"),
    }
    done = subprocess.run(
        [str(python), str(CHILD), json.dumps(payload)],
        capture_output=True,
        text=True,
        env=llama_environment(),
        timeout=900,
    )
    assert done.returncode == 0, f"the llama.cpp child exited with {done.returncode}:\n{done.stderr[-4000:]}"
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("result "))
    return dict(json.loads(line.removeprefix("result ")))


def cosines(first: Any, second: Any) -> np.ndarray:
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_plain_llama_cpp_runs_the_exported_file_bidirectional(
    child: dict[str, Any], tiny_qzhou: Encoder, tiny_qzhou_path: str
) -> None:
    """No flag but the file's own keys: llama_cpp.Llama(path, embedding=True) gives QZhou's vectors."""
    bidirectional = tiny_qzhou.encode_documents(TEXTS)
    causal = Encoder(model=tiny_qzhou_path, bidirectional=False, pooling="mean").encode_documents(TEXTS)
    assert cosines(child["plain"], bidirectional).min() >= REFERENCE
    assert cosines(child["plain"], causal).max() < 0.99  # so the first check can tell them apart


def test_the_backend_matches_torch_on_both_sides(
    child: dict[str, Any], tiny_qzhou: Encoder, minilm: Encoder
) -> None:
    run = child["runs"]["qzhou_f16"]
    assert run["prefixes"] == list(tiny_qzhou.prefixes())  # instructions restored from the file
    assert run["sts_prefixes"] == list(tiny_qzhou.prefixes("sts"))
    assert cosines(run["queries"], tiny_qzhou.encode_queries(TEXTS)).min() >= REFERENCE
    assert cosines(run["documents"], tiny_qzhou.encode_documents(TEXTS)).min() >= REFERENCE
    minilm_run = child["runs"]["minilm_f16"]
    assert cosines(minilm_run["documents"], minilm.encode_documents(TEXTS)).min() >= REFERENCE


def test_facts_come_from_the_file(child: dict[str, Any], tiny_qzhou_path: str) -> None:
    qzhou, minilm = child["runs"]["qzhou_f16"]["facts"], child["runs"]["minilm_f16"]["facts"]
    assert qzhou == {
        "family": "qzhou",
        "pooling": "mean",
        "max_length": 8192,
        "vector_family": "reference",
        "source_model": str(Path(tiny_qzhou_path).resolve()),
        "gguf_type": "f16",
    }
    assert (minilm["family"], minilm["max_length"]) == ("bert", 256)
    assert minilm["source_model"] == "all-MiniLM-L6-v2"


def test_non_causal_attention_and_mean_pooling_are_set_and_verified_on_the_context(
    child: dict[str, Any], tiny_qzhou_path: str
) -> None:
    report = child["runs"]["qzhou_f16"]["context"]
    assert report["causal_reported"] is False
    assert report["pooling_type"] == 1  # LLAMA_POOLING_TYPE_MEAN
    # Asking for causal attention is honoured and verified the same way, with the causal vectors.
    assert child["causal"]["context"]["causal_reported"] is True
    causal = Encoder(model=tiny_qzhou_path, bidirectional=False, pooling="mean").encode_documents(TEXTS)
    assert cosines(child["causal"]["documents"], causal).min() >= REFERENCE


def test_tokens_equal_the_hugging_face_tokenizer(
    child: dict[str, Any], tiny_qzhou: Encoder, minilm: Encoder
) -> None:
    """Special tokens parsed as Hugging Face parses them (``</s>`` is ordinary text in Qwen2), no BOS
    or EOS where the model adds none, [CLS] ... [SEP] for BERT."""
    for label, torch in (("qzhou_f16", tiny_qzhou), ("minilm_f16", minilm)):
        tokenizer = torch.backend.loaded.tokenizer  # type: ignore[attr-defined]
        assert child["tokens"][label] == [tokenizer(text)["input_ids"] for text in TRICKY], label


def test_truncation_at_max_length_warns_and_keeps_the_special_tokens(child: dict[str, Any]) -> None:
    run = child["truncation"]
    assert run["warnings"] == [
        "1 of 2 texts were longer than 16 tokens and were truncated to 16 tokens (instruction included); "
        "raise max_length (this model allows up to 512) to keep more."
    ]
    assert len(run["tokens"]) == 16
    assert (run["tokens"][0], run["tokens"][-1]) == (101, 102)  # [CLS] ... [SEP], as Hugging Face cuts
    torch = Encoder(model="all-MiniLM-L6-v2", max_length=16).encode_documents([LONG])
    assert cosines(run["vector"], torch).min() >= REFERENCE


def test_batches_hold_several_texts_within_one_micro_batch(child: dict[str, Any]) -> None:
    run = child["batching"]
    assert len(run["decodes"]) < 12 and max(run["decodes"]) > 1  # several texts per llama_decode
    assert run["context"]["n_ubatch"] == run["context"]["n_batch"]  # else llama.cpp aborts
    assert min(run["cosines"]) >= 0.99999  # a text's vector does not depend on its batch
    assert (run["context"]["n_threads"], run["context"]["n_threads_batch"]) == (1, 1)


def test_quantised_types_load_safely_and_are_their_own_vector_family(
    child: dict[str, Any], minilm: Encoder
) -> None:
    quantized = child["quantized"]
    assert quantized["use_extra_bufts"] == [False, False]  # the AMX segfault of quantised models
    torch = minilm.encode_documents(TEXTS)
    for gguf_type, floor in (("q8_0", 0.99), ("q4_k_m", 0.9)):
        run = quantized["runs"][gguf_type]
        assert run["facts"]["vector_family"] == f"gguf-{gguf_type}"
        assert floor <= cosines(run["documents"], torch).min() < 1.0


def test_a_collection_never_mixes_vector_families(child: dict[str, Any]) -> None:
    outcome = child["chroma"]
    assert outcome["torch_made_f16"].startswith("opened: Green tea")
    for label in ("torch_made_q8_0", "q8_made_torch"):
        assert outcome[label].startswith("CollectionMismatchError"), outcome[label]
        assert "vector family" in outcome[label]
    assert outcome["q8_made_recorded"].startswith("opened: Green tea")


def test_the_command_line_indexes_and_queries_with_a_gguf_model(child: dict[str, Any]) -> None:
    cli = child["cli"]
    assert (cli["index"], cli["query"]) == (0, 0)
    assert "green" in cli["printed"].lower()


def test_options_a_gguf_file_decides_are_refused(child: dict[str, Any]) -> None:
    assert child["refusals"]["dtype"].startswith("ValueError: dtype='bfloat16' apply to torch checkpoints")
    assert "does not exist" in child["refusals"]["missing"]
    too_long = r"ValueError: max_length=1000000 exceeds what .* can attend to \(\d+ positions\)"
    assert re.match(too_long, child["refusals"]["too_long"])
    assert "was exported as the bert family" in child["refusals"]["family"]


def test_qwen3_embedding_is_causal_pools_the_last_token_and_appends_the_end_token(
    child: dict[str, Any],
) -> None:
    """The file says it all to any llama.cpp runtime: causal Qwen3, last-token pooling, and the end
    token appended by the tokenizer (``add_eos_token``), which is <|endoftext|>, not the tokenizer's
    eos (<|im_end|>)."""
    run = child["families"]["qwen3_f16"]
    assert run["metadata"] == {
        "general.architecture": "qwen3",
        "qwen3.attention.causal": "true",
        "qwen3.pooling_type": "3",  # LLAMA_POOLING_TYPE_LAST
        "tokenizer.ggml.add_bos_token": "false",
        "tokenizer.ggml.add_eos_token": "true",
        "tokenizer.ggml.eos_token_id": str(ENDOFTEXT_ID),
        "qzhou.family": "qwen3-embedding",
        "qzhou.format_version": "2",
        "qzhou.prompt.saved_prompts": json.dumps({"query": QWEN3_QUERY_PROMPT}),
    }
    assert (run["context"]["causal_reported"], run["context"]["pooling_type"]) == (True, 3)
    gte = child["families"]["gte_qwen2_f16"]
    assert (gte["context"]["causal_reported"], gte["context"]["pooling_type"]) == (False, 3)


def test_the_end_token_is_appended_once(child: dict[str, Any], family_encoders: dict[str, Encoder]) -> None:
    """Every text ends with one <|endoftext|>, as the torch encoder's tokenizer gives it (a text that
    writes the token itself keeps it, and gets the closing one after it)."""
    for label in ("qwen3_f16", "gte_qwen2_f16"):
        tokens = child["families"][label]["tokens"]
        torch = family_encoders[label].backend._tokenizer  # type: ignore[attr-defined]
        assert tokens == [torch.encode(text).ids for text in TEXTS + TRICKY], label
        assert all(ids[-1] == ENDOFTEXT_ID and ENDOFTEXT_ID not in ids[:-1] for ids in tokens[: len(TEXTS)])


def test_the_new_families_match_torch_with_their_own_instructions(
    child: dict[str, Any], family_encoders: dict[str, Encoder]
) -> None:
    """The prompt style comes back from the family name and the saved prompts in the file: Qwen3's
    template (no space after ``Query:``) on queries only, its own STS instruction on both sides; the
    BGE folder's saved query prompt; and the vectors of torch on both sides."""
    qwen3 = child["families"]["qwen3_f16"]
    assert qwen3["prefixes"] == [QWEN3_QUERY_PROMPT, ""]
    assert qwen3["sts_prefixes"] == ["Instruct: Retrieve semantically similar text\nQuery:"] * 2
    assert child["families"]["bge_f16"]["prefixes"][1] == ""
    texts = TEXTS + TRICKY
    for label in FAMILIES:
        run, torch = child["families"][label], family_encoders[label]
        assert run["prefixes"] == list(torch.prefixes()), label
        assert run["sts_prefixes"] == list(torch.prefixes("sts")), label
        assert run["facts"]["family"] == torch.facts.family == run["fingerprint"]["family"]
        assert run["facts"]["pooling"] == torch.facts.pooling, label
        assert cosines(run["queries"], torch.encode_queries(texts)).min() >= REFERENCE, label
        assert cosines(run["documents"], torch.encode_documents(texts)).min() >= REFERENCE, label
    assert [child["families"][label]["facts"]["pooling"] for label in FAMILIES] == ["last", "last", "cls"]


def test_matryoshka_dimensions_cut_a_gguf_files_vectors_as_torchs(
    child: dict[str, Any], family_sources: dict[str, str]
) -> None:
    run = child["matryoshka"]
    torch = Encoder(model=family_sources["qwen3_f16"], dimensions=32)
    assert run["dimension"] == 32 and run["fingerprint"]["dimensions"] == "32"
    assert cosines(run["documents"], torch.encode_documents(TEXTS)).min() >= REFERENCE
    assert cosines(run["queries"], torch.encode_queries(TEXTS)).min() >= REFERENCE
    assert run["refused"].startswith("ValueError: dimensions=32: the qzhou family was not trained")


def test_without_llama_cpp_the_error_names_the_extra(gguf_file: Callable[..., Path]) -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("llama-cpp-python is installed in this venv")
    with pytest.raises(ModelLoadError, match=r"pip install 'qzhou-plugins\[llama\]'"):
        Encoder(model=str(gguf_file("minilm", "f16")))


def test_decodes_are_packed_within_the_budget_longest_first() -> None:
    from qzhou_plugins.backends.llama_cpp.runner import pack_by_tokens

    lengths = [5, 40, 12, 33, 7, 64, 1, 20]
    batches = pack_by_tokens(lengths, budget=64, max_sequences=3)
    assert sorted(p for batch in batches for p in batch) == list(range(len(lengths)))
    assert all(sum(lengths[p] for p in batch) <= 64 and len(batch) <= 3 for batch in batches)
    assert batches[0] == [5]  # the longest alone fills the budget
    assert len(batches) < len(lengths)


def test_a_gguf_file_from_elsewhere_is_described_by_llama_cpp_keys_alone() -> None:
    from qzhou_plugins.backends.llama_cpp.metadata import describe
    from qzhou_plugins.instructions import PromptStyle

    bert = describe("x.gguf", {"general.architecture": "bert", "general.file_type": "7"}, 512)
    assert (bert.family, bert.bidirectional, bert.pooling, bert.gguf_type) == ("bert", True, "mean", "q8_0")
    assert (bert.prompt_style, bert.source_model, bert.max_length) == (PromptStyle(), None, 512)
    naive = describe("y.gguf", {"general.architecture": "qwen2", "qwen2.pooling_type": "1"}, 32768)
    assert (naive.family, naive.bidirectional, naive.pooling) == ("decoder", False, "mean")
    with pytest.raises(ModelLoadError, match="newer qzhou-plugins"):
        describe("z.gguf", {"qzhou.format_version": "99"}, 512)


def test_a_file_written_before_families_still_loads() -> None:
    """Format 1 files (family qzhou, decoder or bert, the template written out) get their family's
    prompt style: the same prefixes as before, and the task tables of the family record."""
    from qzhou_plugins.backends.llama_cpp.metadata import describe
    from qzhou_plugins.families import family_named

    old = {
        "general.architecture": "qwen2",
        "qwen2.attention.causal": "false",
        "qwen2.pooling_type": "1",
        "qzhou.format_version": "1",
        "qzhou.family": "qzhou",
        "qzhou.prompt.template": "Instruct: {instruction}\nQuery: ",
        "qzhou.prompt.instructed_by_default": "true",
        "qzhou.prompt.saved_prompts": "{}",
        "qzhou.pooling": "mean",
    }
    facts = describe("old.gguf", old, 32768)
    assert (facts.family, facts.bidirectional, facts.pooling) == ("qzhou", True, "mean")
    assert facts.prompt_style == family_named("qzhou").prompt_style({})
    assert facts.prompt_style.prefixes("sts")[1] == "Instruct: Retrieve semantically similar text\nQuery: "
    bert = {
        **old,
        "general.architecture": "bert",
        "qzhou.family": "bert",
        "qzhou.prompt.template": "{instruction}",
    }
    bert |= {
        "qzhou.prompt.instructed_by_default": "false",
        "qzhou.prompt.saved_prompts": '{"query": "query: "}',
    }
    assert describe("old-bert.gguf", bert, 512).prompt_style.prefixes() == ("query: ", "")
    with pytest.raises(
        ModelLoadError, match="model family 'future-family', which this qzhou-plugins does not"
    ):
        describe("new.gguf", {**old, "qzhou.family": "future-family"}, 32768)
