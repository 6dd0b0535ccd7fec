"""The model family and Matryoshka ``dimensions`` through every edge: the adapters, the Chroma helper, the
server and the remote backend, the bulk output and ``load``, and the command line.

A tiny Qwen3-Embedding (Matryoshka from 32) and the tiny QZhou (no Matryoshka sizes) stand for the two
cases: cut vectors where the family was trained for them, a clear refusal where it was not, and a
record of the family wherever vectors are kept, so that a query never embeds with another family's rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from qzhou_plugins import Encoder
from qzhou_plugins.backends.matryoshka import MatryoshkaBackend, cut_rows
from qzhou_plugins.families import family_by_name
from servers import ServerProcess, our_server

TEXTS = ["Tides rise twice a day.", "Green tea wants water below boiling.", "The moon pulls the sea."]
QUERY = "Why are there tides?"
CUT = 32
"""Qwen3-Embedding's smallest trained size, below the tiny model's 64."""
NOT_TRAINED = "not trained to be cut short"


@pytest.fixture(scope="module")
def qwen3_path(tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer_dir: Path) -> str:
    """A 2-layer random Qwen3-Embedding saved as its sentence-transformers folder (hidden size 64)."""
    from qzhou_plugins.testing_families import build_qwen3_embedding_checkpoint

    return str(build_qwen3_embedding_checkpoint(tmp_path_factory.mktemp("qwen3"), qwen_tokenizer_dir))


@pytest.fixture(scope="module")
def qwen3(qwen3_path: str) -> Encoder:
    return Encoder.shared(model=qwen3_path)


@pytest.fixture(scope="module")
def qwen3_cut(qwen3_path: str) -> Encoder:
    return Encoder.shared(model=qwen3_path, dimensions=CUT)


@pytest.fixture(scope="module")
def qwen3_server(tmp_path_factory: pytest.TempPathFactory, qwen3_path: str) -> Iterator[ServerProcess]:
    """Our server (``qzhou-plugins serve``) on the tiny Qwen3-Embedding, full width."""
    from servers import CLI_SERVE

    with our_server(
        qwen3_path, tmp_path_factory.mktemp("qwen3-server") / "server.log", entry=CLI_SERVE
    ) as up:
        yield up


def assert_close(first: Any, second: Any) -> None:
    np.testing.assert_allclose(np.asarray(first, dtype=np.float32), np.asarray(second), atol=2e-5)


# -- the shared cut and the name-only guess ------------------------------------------------------------


def test_cut_rows_keeps_the_leading_dimensions_renormalised() -> None:
    rows = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    assert_close(cut_rows(rows, 2, normalized=True), [[0.6, 0.8], [0.0, 0.0]])
    assert_close(cut_rows(rows, 2, normalized=False), [[3.0, 4.0], [0.0, 0.0]])


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("Qwen/Qwen3-Embedding-8B", "qwen3-embedding"),
        ("Kingsoft-LLM/QZhou-Embedding", "qzhou"),
        ("Alibaba-NLP/gte-Qwen2-7B-instruct", "gte-qwen2"),
        ("intfloat/e5-mistral-7b-instruct", "e5-mistral"),
        ("BAAI/bge-small-en-v1.5", None),
        ("Qwen/Qwen3-8B", None),
    ],
)
def test_a_served_name_alone_gives_a_family_only_through_the_records_names(name: str, family: str) -> None:
    found = family_by_name(name)
    assert (found.name if found is not None else None) == family


# -- the adapters -------------------------------------------------------------------------------------


def test_dimensions_cut_the_encoders_vectors(qwen3: Encoder, qwen3_cut: Encoder) -> None:
    assert qwen3.family == "qwen3-embedding" and qwen3_cut.dimension == CUT
    assert isinstance(qwen3_cut.backend, MatryoshkaBackend)
    full = qwen3.encode_documents(TEXTS)
    assert_close(qwen3_cut.encode_documents(TEXTS), cut_rows(full, CUT, normalized=True))


def test_langchain_and_llama_index_take_dimensions(qwen3_path: str, qwen3_cut: Encoder) -> None:
    from qzhou_plugins.langchain import QZhouEmbeddings
    from qzhou_plugins.llama_index import QZhouEmbedding

    langchain = QZhouEmbeddings(model=qwen3_path, dimensions=CUT)
    llama_index = QZhouEmbedding(model_name=qwen3_path, dimensions=CUT)
    assert langchain.encoder is qwen3_cut and llama_index.encoder is qwen3_cut
    expected_query = qwen3_cut.encode_queries([QUERY])[0]
    assert_close(langchain.embed_query(QUERY), expected_query)
    assert_close(llama_index.get_query_embedding(QUERY), expected_query)
    assert_close(langchain.embed_documents(TEXTS), qwen3_cut.encode_documents(TEXTS))
    assert len(llama_index.get_text_embedding(TEXTS[0])) == CUT
    assert QZhouEmbeddings(model=qwen3_path, family="qwen3-embedding").encoder.family == "qwen3-embedding"


def test_every_adapter_refuses_dimensions_for_qzhou(tiny_qzhou_path: str) -> None:
    from qzhou_plugins.chroma import QZhouEmbeddingFunction
    from qzhou_plugins.langchain import QZhouEmbeddings
    from qzhou_plugins.llama_index import QZhouEmbedding

    with pytest.raises(ValueError, match=NOT_TRAINED):
        QZhouEmbeddings(model=tiny_qzhou_path, dimensions=CUT)
    with pytest.raises(ValueError, match=NOT_TRAINED):
        QZhouEmbedding(model_name=tiny_qzhou_path, dimensions=CUT)
    with pytest.raises(ValueError, match=NOT_TRAINED):
        QZhouEmbeddingFunction(tiny_qzhou_path, dimensions=CUT)(["x"])


def test_out_of_range_dimensions_are_refused(qwen3_path: str) -> None:
    with pytest.raises(ValueError, match="outside the sizes"):
        Encoder(model=qwen3_path, dimensions=16)
    with pytest.raises(ValueError, match="outside the sizes"):
        Encoder(model=qwen3_path, dimensions=65)


def test_the_chroma_function_records_family_and_dimensions(qwen3_path: str, qwen3_cut: Encoder) -> None:
    from qzhou_plugins.chroma import QZhouEmbeddingFunction

    function = QZhouEmbeddingFunction(qwen3_path, dimensions=CUT)
    config = function.get_config()
    assert config["family"] == "qwen3-embedding" and config["dimensions"] == CUT
    assert config["dimension"] == CUT
    rebuilt = QZhouEmbeddingFunction.build_from_config(json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config
    assert (rebuilt.encoder.config.family, rebuilt.encoder.config.dimensions) == ("qwen3-embedding", CUT)
    assert_close(rebuilt.embed_query(["tides"]), qwen3_cut.encode_queries(["tides"]))
    with pytest.raises(ValueError, match="family"):
        rebuilt.validate_config_update(config, {**config, "family": "decoder"})


# -- a collection ---------------------------------------------------------------------------------------


def test_a_collection_records_family_and_dimensions_and_refuses_others(
    qwen3_path: str, tmp_path: Path
) -> None:
    from qzhou_plugins.chroma import CollectionMismatchError, QZhouCollection

    made = QZhouCollection.open("cut", path=tmp_path, model=qwen3_path, dimensions=CUT)
    made.add(TEXTS)
    reopened = QZhouCollection.open("cut", path=tmp_path)
    assert reopened.encoder.dimension == CUT and reopened.encoder.family == "qwen3-embedding"
    assert reopened.query(QUERY, n_results=1)[0].hits
    with pytest.raises(CollectionMismatchError, match=r"dimension: the collection has 32, you asked for 64"):
        QZhouCollection.open("cut", path=tmp_path, dimensions=64)
    with pytest.raises(CollectionMismatchError, match=r"family: the collection has 'qwen3-embedding', you"):
        QZhouCollection.open("cut", path=tmp_path, family="decoder", dimensions=None)
    with pytest.raises(ValueError, match=f"the decoder family was {NOT_TRAINED}"):
        QZhouCollection.open("cut", path=tmp_path, family="decoder")  # the recorded size replayed
    assert QZhouCollection.open("cut", path=tmp_path).count() == len(TEXTS)


def test_a_collection_made_before_families_opens_as_the_model_is_now(
    qwen3_path: str, qwen3: Encoder, tmp_path: Path
) -> None:
    """A record without ``family`` and ``dimensions`` (an older release's) opens; its model's family
    now is taken as the one its vectors were made with."""
    import chromadb

    from qzhou_plugins.chroma import QZhouCollection, QZhouEmbeddingFunction
    from qzhou_plugins.integrations.chroma.fingerprint import creation_metadata

    class OlderRecord(QZhouEmbeddingFunction):
        def get_config(self) -> dict[str, Any]:
            config = super().get_config()
            return {key: value for key, value in config.items() if key not in ("family", "dimensions")}

    older = OlderRecord.from_encoder(qwen3)
    client = chromadb.PersistentClient(path=str(tmp_path))
    collection = client.get_or_create_collection(
        "older", embedding_function=older, metadata=creation_metadata(older.get_config())
    )
    collection.add(ids=["a", "b"], documents=TEXTS[:2], embeddings=list(qwen3.encode_documents(TEXTS[:2])))
    reopened = QZhouCollection.open("older", client=client)
    assert (
        reopened.encoder.family == "qwen3-embedding"
        and "family" not in collection.configuration_json["embedding_function"]["config"]
    )
    assert reopened.query(QUERY, n_results=1)[0].hits[0].id in {"a", "b"}


# -- the server and the remote backend -------------------------------------------------------------------


def test_models_say_family_prompts_and_matryoshka(qwen3_server: ServerProcess, qwen3: Encoder) -> None:
    cards = httpx.get(qwen3_server.url + "/v1/models", timeout=30).json()["data"]
    card = next(card for card in cards if card["id"] == qwen3_server.name)
    assert card["family"] == "qwen3-embedding" and card["matryoshka_min"] == CUT
    assert card["saved_prompts"] == qwen3.facts.prompt_style.saved_prompts and card["dimension"] == 64


def test_the_server_cuts_per_request(qwen3_server: ServerProcess, qwen3_cut: Encoder) -> None:
    rows = qwen3_server.embed({"input": TEXTS, "dimensions": CUT, "encoding_format": "base64"})
    assert_close(rows, qwen3_cut.encode_documents(TEXTS))
    queries = qwen3_server.embed({"input": [QUERY], "dimensions": CUT, "input_type": "query"})
    assert_close(queries, qwen3_cut.encode_queries([QUERY]))
    assert qwen3_server.embed({"input": TEXTS, "dimensions": 64}).shape == (3, 64)


@pytest.mark.parametrize("dimensions", [16, 65, 0])
def test_the_server_refuses_sizes_outside_the_trained_ones(
    qwen3_server: ServerProcess, dimensions: int
) -> None:
    answer = qwen3_server.post("/v1/embeddings", {"input": "x", "dimensions": dimensions})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "dimensions" and "outside the sizes" in error["message"]


def test_the_server_refuses_dimensions_for_qzhou(qzhou_server: ServerProcess) -> None:
    answer = qzhou_server.post("/v1/embeddings", {"input": "x", "dimensions": CUT})
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert "not a Matryoshka model" in message and NOT_TRAINED in message and "qzhou family" in message


def test_the_remote_backend_learns_the_family_from_the_server(
    qwen3_server: ServerProcess, qwen3_path: str, qwen3: Encoder, qwen3_cut: Encoder
) -> None:
    url = qwen3_server.url + "/v1"
    remote = Encoder(model=qwen3_path, base_url=url)
    assert remote.family == "qwen3-embedding" and remote.facts.prompt_style == qwen3.facts.prompt_style
    assert remote.prefixes("sts") == qwen3.prefixes("sts")
    assert_close(remote.encode_queries([QUERY]), qwen3.encode_queries([QUERY]))
    # dimensions on a served model: cut on this side (MatryoshkaBackend), with the family's checks.
    cut = Encoder(model=qwen3_path, base_url=url, dimensions=CUT)
    assert isinstance(cut.backend, MatryoshkaBackend)
    assert_close(cut.encode_documents(TEXTS), qwen3_cut.encode_documents(TEXTS))
    with pytest.raises(ValueError, match="outside the sizes"):
        Encoder(model=qwen3_path, base_url=url, dimensions=16)
    with pytest.raises(ValueError, match=r"serves .* as a 'qwen3-embedding' model"):
        Encoder(model=qwen3_path, base_url=url, family="gte-qwen2")


def test_serve_takes_family_and_dimensions_for_the_served_model(qwen3_path: str) -> None:
    import argparse

    from qzhou_plugins.server.options import add_server_arguments, settings_from_arguments

    parser = add_server_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--model", qwen3_path, "--family", "qwen3-embedding", "--dimensions", "32"])
    config = settings_from_arguments(args).encoder_config()
    assert (config.family, config.dimensions) == ("qwen3-embedding", CUT)
    assert settings_from_arguments(parser.parse_args([])).encoder_config().dimensions is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--family", "qwen4"])


def test_a_served_qzhou_refuses_dimensions_on_the_client(
    qzhou_server: ServerProcess, tiny_qzhou_path: str
) -> None:
    from servers import SERVER_KEY

    with pytest.raises(ValueError, match=NOT_TRAINED):
        Encoder(model=tiny_qzhou_path, base_url=qzhou_server.url + "/v1", api_key=SERVER_KEY, dimensions=CUT)


# -- bulk outputs and load --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    rows = [{"_id": f"d{i}", "title": "", "text": text} for i, text in enumerate(TEXTS)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_a_bulk_output_records_vector_family_family_and_dimensions(
    qwen3_path: str, qwen3_cut: Encoder, corpus: Path, tmp_path: Path
) -> None:
    from qzhou_plugins.bulk import OutputMismatchError, embed_corpus, iter_vectors, read_fingerprint

    out = tmp_path / "out"
    embed_corpus(corpus, out, model=qwen3_path, dimensions=CUT)
    fingerprint = read_fingerprint(out)
    assert fingerprint["vector_family"] == "reference" and fingerprint["family"] == "qwen3-embedding"
    assert fingerprint["dimensions"] == CUT and fingerprint["dimension"] == CUT
    (batch,) = iter_vectors(out)
    assert_close(batch.vectors, qwen3_cut.encode_documents(TEXTS))
    with pytest.raises(OutputMismatchError, match="dimension"):
        embed_corpus(corpus, out, model=qwen3_path)


def test_load_keeps_the_outputs_dimensions_and_refuses_another_vector_family(
    qwen3_path: str, qwen3_cut: Encoder, corpus: Path, tmp_path: Path
) -> None:
    from qzhou_plugins.bulk import embed_corpus
    from qzhou_plugins.chroma import CollectionMismatchError, QZhouCollection

    out = tmp_path / "out"
    embed_corpus(corpus, out, model=qwen3_path, dimensions=CUT)
    loaded = QZhouCollection.open_precomputed("loaded", out, path=tmp_path / "db")
    loaded.add_precomputed(out)
    assert loaded.embedding_function.get_config()["dimensions"] == CUT
    encoder = loaded.embedding_function.encoder
    assert (encoder.config.family, encoder.config.dimensions, encoder.dimension) == (
        "qwen3-embedding",
        CUT,
        CUT,
    )
    best = loaded.query(QUERY, n_results=1)[0].hits[0]
    expected = int(np.argmax(qwen3_cut.encode_documents(TEXTS) @ qwen3_cut.encode_queries([QUERY])[0]))
    assert best.id == f"d{expected}"
    # The same vectors said to come from a quantised GGUF run: another vector family, refused by load.
    manifest = json.loads((out / "_manifest.json").read_text("utf-8"))
    manifest["fingerprint"]["vector_family"] = "gguf-q8_0"
    (out / "_manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(CollectionMismatchError, match=r"vector family: the collection has 'reference'"):
        QZhouCollection.open_precomputed("loaded", out, path=tmp_path / "db")
    assert QZhouCollection.open("loaded", path=tmp_path / "db").count() == len(TEXTS)


# -- the command line -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["index"], ["query"], ["embed"], ["serve"], ["eval", "retrieval"], ["eval", "sts"]]
)
def test_every_encoding_command_takes_family_and_dimensions(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from qzhou_plugins.cli import main

    code = main([*command, "--help"])
    out = capsys.readouterr().out
    assert code == 0 and "--family" in out and "--dimensions" in out and "qwen3-embedding" in out


def test_embed_and_index_with_dimensions_on_the_command_line(
    qwen3_path: str, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qzhou_plugins.bulk import read_fingerprint
    from qzhou_plugins.chroma import QZhouCollection
    from qzhou_plugins.cli import main

    assert (
        main(
            [
                "embed",
                str(corpus),
                "--out",
                str(tmp_path / "out"),
                "--model",
                qwen3_path,
                "--dimensions",
                "32",
            ]
        )
        == 0
    )
    assert read_fingerprint(tmp_path / "out")["dimension"] == CUT
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "tides.txt").write_text(" ".join(TEXTS), encoding="utf-8")
    where = ["--collection", "cut", "--db", str(tmp_path / "db")]
    code = main(["index", str(folder), *where, "--model", qwen3_path, "--dimensions", "32"])
    assert code == 0, capsys.readouterr().err
    assert QZhouCollection.open("cut", path=tmp_path / "db").encoder.dimension == CUT
    assert main(["query", "tides", *where, "--dimensions", "64"]) != 0
    assert "dimension: the collection has 32" in capsys.readouterr().err
