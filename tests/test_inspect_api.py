"""The inspector's JSON endpoints (``qzhou-plugins inspect``), on the example notes and the demo model.

Every search goes through ``QZhouCollection.query``: the page's hits are the collection's own, each
with its ranks on the dense and lexical sides; bad input is answered with the command line's message;
a request through another host name is refused; evaluation files become plots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inspect_data import BROKEN, TEA, evaluation_paths, notes
from qzhou_plugins import DEMO_MODEL
from qzhou_plugins.chroma import QZhouCollection
from qzhou_plugins.cli.inspect import allowed_hosts
from qzhou_plugins.inspector import plots
from test_cli import assert_one_line_error, run

pytest.importorskip("fastapi")

ADDRESS = "http://127.0.0.1:8765"
QUESTION = "green tea water temperature"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    return notes(tmp_path_factory, minilm_path)


@pytest.fixture(scope="module")
def files(folder: Path) -> list[dict[str, Any]]:
    paths = evaluation_paths(folder)
    return [{"name": path.name, "result": json.loads(path.read_text("utf-8"))} for path in paths]


def make_client(folder: Path, **options: Any) -> Any:
    import argparse

    from fastapi.testclient import TestClient

    from qzhou_plugins.inspector.app import create_app
    from qzhou_plugins.inspector.catalog import Catalog

    where = argparse.Namespace(db=str(folder / "db"), host=None, port=None, lexical_dir=None)
    options.setdefault("allowed_hosts", allowed_hosts("127.0.0.1", []))
    return TestClient(create_app(Catalog(where), **options), base_url=ADDRESS, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(folder: Path) -> Any:
    return make_client(folder)


def search(client: Any, **fields: Any) -> dict[str, Any]:
    answer = client.post("/api/search", json={"collection": TEA, "q": QUESTION, **fields})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_collections_say_what_each_records(client: Any) -> None:
    found = {one["name"]: one for one in client.get("/api/collections").json()["collections"]}
    tea = found[TEA]
    assert tea["count"] == 20 and tea["model"] == DEMO_MODEL and tea["dimension"] == 384
    assert tea["query_prefix"] == "" and tea["vector_family"] == "reference"
    assert (tea["analyzer"], tea["lexical_engine"]) == ("english", "fts5")
    assert tea["lexical_index"]["state"] == "in step" and tea["lexical_index"]["count"] == 20
    assert found[BROKEN]["model"].endswith("model-that-was-deleted")  # described without loading it


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_a_search_is_the_collections_own_query(client: Any, folder: Path, mode: str) -> None:
    answer = search(client, mode=mode, k=5)
    collection = QZhouCollection.open(TEA, path=folder / "db", create=False)
    (direct,) = collection.query(QUESTION, n_results=5, mode=mode)
    assert [hit["id"] for hit in answer["hits"]] == [hit.id for hit in direct.hits]
    assert [hit["score"] for hit in answer["hits"]] == pytest.approx([hit.score for hit in direct.hits])
    sides = {
        side: collection.query(QUESTION, n_results=100, mode=side)[0].hits for side in ("dense", "lexical")
    }
    for hit in answer["hits"]:  # each rank is the hit's place in that side's own list
        for side in ("dense", "lexical"):
            rank = hit[f"{side}_rank"]
            if rank is not None:
                assert sides[side][rank - 1].id == hit["id"]
                assert hit[f"{side}_score"] == pytest.approx(sides[side][rank - 1].score)
    ranked = [hit[f"{mode}_rank"] for hit in answer["hits"]] if mode != "hybrid" else None
    assert ranked is None or ranked == [1, 2, 3, 4, 5]
    assert answer["scores_line"].startswith("Scores: ")


def test_the_query_as_the_model_saw_it_and_the_matched_words(client: Any) -> None:
    answer = search(client, mode="hybrid")
    assert answer["instructed_query"] == QUESTION  # the demo model takes no instruction
    assert answer["lexical_terms"] == ["green", "tea", "water", "temperatur"]
    first = answer["hits"][0]
    marked = {first["document"][start:end].lower() for start, end in first["spans"]}
    assert {"green", "tea", "water", "temperature"} <= marked
    dense = search(client, mode="dense")
    assert all(hit["spans"] == [] and hit["lexical_rank"] is None for hit in dense["hits"])


def test_a_filter_and_a_rerank(client: Any) -> None:
    source = "examples/documents/processing.md"
    filtered = search(client, mode="hybrid", where=json.dumps({"source": source}))
    assert filtered["hits"] and {hit["metadata"]["source"] for hit in filtered["hits"]} == {source}
    reranked = search(client, mode="hybrid", k=3, rerank=10)
    assert (
        "reranked by" in reranked["scores_line"] and "among the best 10 candidates" in reranked["scores_line"]
    )
    assert all(
        hit["rerank_score"] == hit["score"] and hit["fused_score"] is not None for hit in reranked["hits"]
    )


def test_compare_lists_the_three_modes(client: Any) -> None:
    asked = {"collection": TEA, "q": QUESTION, "k": 4, "mode": "lexical", "rerank": 10}
    answer = client.post("/api/compare", json=asked).json()
    assert list(answer["lists"]) == ["dense", "lexical", "hybrid", "reranked"]
    for mode in ("dense", "lexical", "hybrid"):
        listed = answer["lists"][mode]
        assert listed["mode"] == mode and len(listed["hits"]) == 4
        assert all(hit["rerank_score"] is None for hit in listed["hits"])  # the modes' own lists
    reranked = answer["lists"]["reranked"]  # the asked mode's best 10, reranked by the collection's model
    assert reranked == search(client, mode="lexical", k=4, rerank=10)
    assert reranked["mode"] == "lexical" and all(hit["rerank_score"] is not None for hit in reranked["hits"])
    assert [hit["id"] for hit in reranked["hits"]] != [
        hit["id"] for hit in answer["lists"]["lexical"]["hits"]
    ]
    plain = client.post("/api/compare", json={"collection": TEA, "q": QUESTION, "k": 4}).json()
    assert list(plain["lists"]) == ["dense", "lexical", "hybrid"]  # no rerank asked, no fourth list


def test_a_document_with_its_neighbours(client: Any) -> None:
    hits = search(client, mode="lexical", k=10)["hits"]
    second = next(hit for hit in hits if hit["metadata"].get("chunk") == 1)
    answer = client.get("/api/document", params={"collection": TEA, "id": second["id"]}).json()
    assert answer["document"] == second["document"] and answer["metadata"] == second["metadata"]
    around = answer["neighbours"]
    assert [one["metadata"]["chunk"] for one in around][:2] == [0, 1]
    assert {one["metadata"]["source"] for one in around} == {second["metadata"]["source"]}
    assert [one["current"] for one in around].count(True) == 1


def cli_error(capsys: pytest.CaptureFixture[str], folder: Path, *argv: str) -> str:
    code, _, err = run(capsys, "query", *argv, "--db", folder / "db")
    assert code != 0
    return assert_one_line_error(err).removeprefix("error: ")


def test_bad_input_gets_the_command_lines_message(
    client: Any, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(status: int, **fields: Any) -> str:
        answer = client.post("/api/search", json={"collection": TEA, "q": QUESTION, **fields})
        assert answer.status_code == status, answer.text
        return answer.json()["error"]["message"]

    assert refused(400, collection="nope") == cli_error(capsys, folder, QUESTION, "-c", "nope")
    assert refused(400, k=0) == cli_error(capsys, folder, QUESTION, "-c", TEA, "-k", "0")
    assert refused(400, rerank=-3) == cli_error(capsys, folder, QUESTION, "-c", TEA, "--rerank", "-3")
    assert refused(400, q=" ") == cli_error(capsys, folder, " ", "-c", TEA)
    assert refused(400, where="{source: 1").startswith("where: not valid JSON (Expecting property name")
    assert "must be a JSON object" in refused(400, where="[1]")
    assert "holds 1048576 characters" in refused(413, q="x" * 2**20)
    assert "model-that-was-deleted" in refused(500, collection=BROKEN)  # the model cannot load
    missing = client.get("/api/document", params={"collection": TEA, "id": "no-such-id"})
    assert (
        missing.status_code == 404 and "no chunk with id 'no-such-id'" in missing.json()["error"]["message"]
    )


def test_other_hosts_are_refused(folder: Path, client: Any) -> None:
    refused = client.get("/api/collections", headers={"Host": "attacker.example:8765"})
    assert refused.status_code == 421 and "DNS-rebinding" in refused.json()["error"]["message"]
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 421
    assert client.get("/api/health", headers={"Host": "localhost:8765"}).status_code == 200
    assert allowed_hosts("0.0.0.0", []) is None and allowed_hosts("0.0.0.0", ["Box.lan"]) == {"box.lan"}
    assert allowed_hosts("::1", []) >= {"[::1]", "localhost"}


def test_the_api_key_guards_every_api_request(folder: Path) -> None:
    guarded = make_client(folder, api_key="k-123")
    assert guarded.get("/api/collections").status_code == 401
    assert guarded.get("/api/collections", headers={"Authorization": "Bearer k-123"}).status_code == 200
    page = guarded.get("/")
    assert page.status_code == 200 and "qzhou-plugins inspect" in page.text  # the page asks for the key
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_evaluation_files_become_plots(client: Any, files: list[dict[str, Any]]) -> None:
    dense = files[1]["result"]
    figures = dense["per_query"]
    assert sum(one["ndcg_at_10"] for one in figures.values()) / len(figures) == pytest.approx(
        dense["ndcg_at_10"]
    )
    answer = client.post("/api/plots", json={"files": files}).json()
    assert [run["label"] for run in answer["runs"]] == [
        "lexical: lexical", "dense-reranked: dense", f"dense-reranked: dense + rerank {DEMO_MODEL}"
    ]  # fmt: skip
    assert (
        answer["bars"].startswith("<svg") and "nDCG@10" in answer["bars"] and "recall@100" in answer["bars"]
    )
    assert "nDCG@10 per query" in answer["scatter"] and answer["scatter"].count("<circle") == 4
    assert len(answer["worst"]) == 4 and answer["worst"][0]["first"][0]["excerpt"]
    long_name = "a run named at length: dense, MiniLM, SciFact test split, reranked at depth 100 by " * 2
    drawn = plots.bars([(long_name, 0.5, 0.7)])  # cut under its bars, whole in its tooltip
    assert f"<title>{long_name}</title>{long_name[: plots.LABEL_MOST - 1]}…</text>" in drawn
    paired = client.post("/api/plots", json={"files": files, "first": 1, "second": 2}).json()
    assert paired["pair"] == [1, 2]


def test_bad_evaluation_files_are_named(client: Any, files: list[dict[str, Any]]) -> None:
    def refused(body: Any) -> str:
        answer = client.post("/api/plots", json=body)
        assert answer.status_code == 400, answer.text
        return answer.json()["error"]["message"]

    sts = {"name": "sts.json", "result": {"evaluation": "sts", "spearman": 0.8}}
    assert refused({"files": [sts]}).startswith(
        "sts.json: an sts evaluation; the plots are of retrieval ones"
    )
    assert "not an `eval retrieval --json` result" in refused({"files": [{"name": "x.json", "result": {}}]})
    assert "no evaluation file given" in refused({"files": []})
    assert "there are 3 run(s)" in refused({"files": files, "first": 7})


def test_the_page_needs_no_network() -> None:
    static = Path(__file__).resolve().parents[1] / "src" / "qzhou_plugins" / "inspector" / "static"
    for file in static.iterdir():
        text = file.read_text("utf-8").replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, file.name
