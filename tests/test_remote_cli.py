"""The command line against a served model (``--base-url``): a real ``qzhou-plugins serve`` process on
127.0.0.1 embeds for ``index``, ``query`` and ``eval``; the collection it builds is the same collection
for the model loaded here, and refused to another model; local-only flags are usage errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import shared_data
from qzhou_plugins import DEMO_MODEL
from servers import SERVER_KEY, ServerProcess, free_port
from test_cli import EXAMPLES, assert_one_line_error, run

API_KEY = SERVER_KEY
QUESTIONS = ["How hot should the water be for green tea?", "Who wrote the first book about tea?"]
STS_PAIRS = 40
"""Pairs of the STS test set the evaluation runs on: enough for a correlation, cheap on CPU."""
RANK_LINE = re.compile(r"^(\d+)\. (-?\d\.\d{4})  (.+)$")


@pytest.fixture(params=["minilm", "qzhou"])
def served(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, str]:
    """(model name, base URL, another model) for each served model; the key is in $QZHOU_API_KEY."""
    monkeypatch.setenv("QZHOU_API_KEY", API_KEY)
    tiny = request.getfixturevalue("tiny_qzhou_path")
    if request.param == "minilm":
        return DEMO_MODEL, request.getfixturevalue("minilm_server").url + "/v1", tiny
    return tiny, request.getfixturevalue("qzhou_server").url + "/v1", DEMO_MODEL


def ranked(out: str) -> list[tuple[str, float]]:
    """(source, score) of each hit ``query`` printed, best first."""
    hits = [RANK_LINE.match(line) for line in out.splitlines()]
    return [(match.group(3), float(match.group(2))) for match in hits if match]


def test_a_collection_built_through_the_server_is_the_local_models_collection(
    served: tuple[str, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, url, other = served
    where = ["-c", "tea", "--db", tmp_path / "db"]
    code, out, err = run(capsys, "index", EXAMPLES, *where, "--model", model, "--base-url", url)
    assert code == 0, err
    added = int(re.search(r"(\d+) chunk\(s\) added", out).group(1))
    assert added > 8
    for question in QUESTIONS:
        code, out, err = run(capsys, "query", question, *where, "-k", "3", "--base-url", url)
        assert code == 0, err
        remote = ranked(out)
        code, out, err = run(capsys, "query", question, *where, "-k", "3")  # the model loaded here
        assert code == 0, err
        local = ranked(out)
        assert len(remote) == 3 and [s for s, _ in remote] == [s for s, _ in local]
        assert [score for _, score in remote] == pytest.approx([score for _, score in local], abs=2e-4)
    # The local model accepts the served model's vectors as its own: nothing is embedded again.
    code, out, err = run(capsys, "index", EXAMPLES, *where, "--model", model)
    assert code == 0, err
    assert f"0 chunk(s) added, 0 removed; the collection holds {added}." in out
    # Another model is refused, loaded here or served.
    for flags in ([], ["--base-url", url]):
        code, _, err = run(capsys, "query", QUESTIONS[0], *where, "--model", other, *flags)
        line = assert_one_line_error(err)
        assert code == 1 and "was built with another embedding setup" in line
        assert f"model: the collection has {model!r}, you asked for {other!r}" in line


@pytest.fixture(scope="module")
def sts_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first pairs of the STS benchmark's test set (header kept), as a file of their own."""
    lines = (shared_data("stsbenchmark") / "sts-test.tsv").read_text("utf-8").splitlines()
    path = tmp_path_factory.mktemp("sts") / "sts-slice.tsv"
    path.write_text("\n".join(lines[: STS_PAIRS + 1]) + "\n", "utf-8")
    return path


def test_eval_through_the_server_gives_the_local_figure(
    tiny_qzhou_path: str,
    qzhou_server: ServerProcess,
    sts_slice: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On QZhou, where both STS sentences carry the instruction, added here for the served model."""
    monkeypatch.setenv("QZHOU_API_KEY", API_KEY)
    model = tiny_qzhou_path
    results = []
    for name, flags in (("remote", ["--base-url", qzhou_server.url + "/v1"]), ("local", [])):
        out_json = tmp_path / f"{name}.json"
        code, _, err = run(capsys, "eval", "sts", sts_slice, "--model", model, "--json", out_json, *flags)
        assert code == 0, err
        results.append(json.loads(out_json.read_text("utf-8")))
    remote, local = results
    assert remote["pairs"] == local["pairs"] == STS_PAIRS and remote["model"] == local["model"] == model
    assert remote["query_prefix"] == remote["document_prefix"] == local["query_prefix"] != ""
    figures = ("spearman", "pearson")
    assert [remote[f] for f in figures] == pytest.approx([local[f] for f in figures], abs=1e-6)


@pytest.fixture
def two_pairs(tmp_path: Path) -> Path:
    """The smallest STS file: what the usage and key checks need, without the shared data."""
    path = tmp_path / "pairs.tsv"
    path.write_text("A cat sits.\tA cat is sitting.\t4.5\nA man runs.\tIt rains.\t0.2\n", "utf-8")
    return path


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--device", "cpu"], "--device decides"),
        (["--dtype", "float32", "--device", "cpu"], "--device and --dtype decide"),
    ],
)
def test_a_local_only_flag_beside_base_url_is_a_usage_error(
    flags: list[str], named: str, two_pairs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # never contacted: the flags are refused first
    code, _, err = run(capsys, "eval", "sts", two_pairs, "--base-url", url, *flags)
    line = assert_one_line_error(err)
    assert code == 2 and named in line and f"--base-url {url} names a served model" in line


def test_embed_refuses_device_beside_base_url_but_keeps_its_storage_dtype(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``embed --dtype`` is how vectors are stored, not how a model is loaded: allowed with a URL."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "title": "", "text": "tea"}\n', "utf-8")
    common = ["embed", corpus, "--out", tmp_path / "out", "--model", DEMO_MODEL, "--base-url", url]
    code, _, err = run(capsys, *common, "--device", "cpu", "--dtype", "float16")
    line = assert_one_line_error(err)
    assert code == 2 and "--device decides" in line and "--dtype" not in line
    code, _, err = run(capsys, *common, "--dtype", "float16")  # gets past the check: nobody answers
    assert code == 1 and "cannot be reached" in assert_one_line_error(err)


def test_a_base_url_that_is_not_http_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "query", "tea", "-c", "tea", "--db", tmp_path, "--base-url", "localhost:8000")
    line = assert_one_line_error(err)
    assert code == 2 and "argument --base-url: base_url must start with http:// or https://" in line


def test_a_missing_key_is_a_one_line_error(
    minilm_server: ServerProcess,
    two_pairs: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("QZHOU_API_KEY", raising=False)
    code, _, err = run(
        capsys, "eval", "sts", two_pairs, "--model", DEMO_MODEL, "--base-url", minilm_server.url + "/v1"
    )
    line = assert_one_line_error(err)
    assert code == 1 and "answered 401" in line
