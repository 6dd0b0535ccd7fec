"""Bad input to the Chroma integration: refused in our words, naming the problem and its position.

Each case here used to be stored wrongly (NaN metadata as None, a 65-bit int as a float no filter
finds) or to fail deep inside Chroma or the hashing of ids (``Cannot convert Python object to
MetadataValue``, ``File exists (os error 17)``, ``UnicodeEncodeError``). Everything runs on a real
embedded Chroma database, one per module, with the offline demo model.
"""

from __future__ import annotations

import math
import uuid
import warnings
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.api import ClientAPI

from qzhou_plugins import DEMO_MODEL
from qzhou_plugins.chroma import DEFAULT_PATH, QZhouCollection, QZhouEmbeddingFunction, content_id

TEXTS = ["Green tea is steeped at 70-80 °C.", "Espresso is brewed under pressure.", "Bread rises with yeast."]


def unique_name() -> str:
    return f"inputs-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> ClientAPI:
    return chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("chroma-inputs")))


@pytest.fixture
def collection(client: ClientAPI) -> QZhouCollection:
    return QZhouCollection.open(unique_name(), client=client, model=DEMO_MODEL)


# -- metadata ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "error", "fragments"),
    [
        ({"score": math.nan}, ValueError, ["metadatas[1]['score']", "nan", "None"]),
        ({"score": math.inf}, ValueError, ["metadatas[1]['score']", "inf"]),
        ({"score": -math.inf}, ValueError, ["metadatas[1]['score']", "-inf"]),
        ({"n": 2**63}, ValueError, ["metadatas[1]['n']", "9223372036854775808", "64-bit", "string"]),
        ({"n": -(2**63) - 1}, ValueError, ["metadatas[1]['n']", "64-bit"]),
        ({"scores": [1.0, math.nan]}, ValueError, ["metadatas[1]['scores'][1]", "nan"]),
        ({"ns": [1, 2**64]}, ValueError, ["metadatas[1]['ns'][1]", "64-bit"]),
        ({"tags": []}, ValueError, ["metadatas[1]['tags']", "empty list"]),
        ({"tags": [1, "a"]}, ValueError, ["metadatas[1]['tags']", "int, str", "one type"]),
        ({"x": None}, ValueError, ["metadatas[1]['x'] is None", "leave the key out"]),
        ({"": "v"}, ValueError, ["metadatas[1]", "empty key"]),
        ({"#document": "v"}, ValueError, ["metadatas[1]", "'#document'", "reserves"]),
        ({"$and": 1}, ValueError, ["metadatas[1]", "'$and'", "reserves"]),
        ({"chroma:document": "v"}, ValueError, ["metadatas[1]", "'chroma:document'", "reserves"]),
        ({5: "v"}, TypeError, ["metadatas[1]", "key 5", "strings"]),
        ({"source": "a\ud800b"}, ValueError, ["metadatas[1]['source']", "lone surrogate", "character 1"]),
        ({"a\udc00": "v"}, ValueError, ["metadatas[1] key", "lone surrogate"]),
        ({"tags": ["ok", "\ud800"]}, ValueError, ["metadatas[1]['tags'][1]", "lone surrogate"]),
        ({"when": object()}, ValueError, ["metadatas[1]['when']", "object", "Chroma stores str"]),
    ],
)
def test_metadata_chroma_would_store_wrongly_or_fail_on_is_refused(
    collection: QZhouCollection, metadata: dict[Any, Any], error: type, fragments: list[str]
) -> None:
    with pytest.raises(error) as raised:
        collection.add(TEXTS, [{"k": 1}, metadata, {"k": 3}])
    for fragment in fragments:
        assert fragment in str(raised.value), str(raised.value)
    assert collection.count() == 0


def test_metadata_at_the_edges_of_what_chroma_stores_is_stored_and_found(
    collection: QZhouCollection,
) -> None:
    """The 64-bit bounds, huge finite floats, lists and sparse keys are stored as given and filterable."""
    metadatas = [
        {"n": 2**63 - 1, "x": 1e308, "tags": ["a", "b"]},
        {"n": -(2**63), "x": -1e308, "flags": [True, False]},
        {"n": 0, "x": 0.5, "a.b c": "spaces and dots are fine in keys"},
    ]
    assert collection.add(TEXTS, metadatas).added == 3
    stored = collection.collection.get(ids=[content_id(t, m) for t, m in zip(TEXTS, metadatas, strict=True)])
    assert stored["metadatas"] == metadatas
    for metadata, text in zip(metadatas, TEXTS, strict=True):
        assert collection.collection.get(where={"n": metadata["n"]})["documents"] == [text]


def test_streamed_metadata_is_refused_at_its_position_after_the_earlier_batches(
    collection: QZhouCollection,
) -> None:
    metadatas = iter([{"k": 1}, {"k": 2}, {"k": 3}, {"k": math.nan}])
    texts = iter([*TEXTS, "A fourth text."])
    with pytest.raises(ValueError, match=r"metadatas\[3\]\['k'\] is nan"):
        collection.add(texts, metadatas, batch_size=2)
    assert collection.count() == 2


# -- texts and ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "fragments"),
    [
        ("\u200b\u200b", ["visible content", "position(s) 1"]),
        ("\ufeff", ["visible content", "position(s) 1"]),
        ("\x00\x00\x01", ["visible content", "position(s) 1"]),
        ("ok \ud800 text", ["lone surrogate", "position(s) 1", "character 3"]),
    ],
)
def test_texts_with_nothing_to_embed_or_lone_surrogates_are_refused_before_hashing(
    collection: QZhouCollection, bad: str, fragments: list[str]
) -> None:
    """Invisible texts would all get one vector; a surrogate made the id hashing fail with no position."""
    for texts in ([TEXTS[0], bad, TEXTS[1]], iter([TEXTS[0], bad, TEXTS[1]])):
        with pytest.raises(ValueError) as raised:
            collection.add(texts, batch_size=1 if isinstance(texts, list) else 5)
        message = str(raised.value)
        if isinstance(texts, list):
            assert all(fragment in message for fragment in fragments), message
        else:
            assert "texts[1]" in message and fragments[0] in message, message
    with pytest.raises(ValueError, match=fragments[0]):
        collection.query(["fine", bad])
    with pytest.raises(ValueError, match=fragments[0]):
        collection.embedding_function([bad])
    assert collection.count() == 0


def test_ids_with_lone_surrogates_are_refused_with_their_position(collection: QZhouCollection) -> None:
    with pytest.raises(ValueError, match=r"ids\[2\] holds a lone surrogate \('\\udfff' at character 2\)"):
        collection.add(TEXTS, ids=["a", "b", "c-\udfff"])
    assert collection.count() == 0


# -- opening -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "error", "fragment"),
    [
        (None, TypeError, "must be a string, not NoneType"),
        (7, TypeError, "must be a string, not int"),
        ("a", ValueError, "it has 1 characters, and Chroma needs 3 to 512"),
        ("x" * 513, ValueError, "it has 513 characters"),
        ("my coll", ValueError, "' ' at character 2"),
        ("thé-notes", ValueError, "'é' at character 2"),
        ("-notes", ValueError, "start and end with an ASCII letter or digit"),
        ("notes.", ValueError, "start and end"),
        ("a..b", ValueError, "two periods in a row"),
        ("10.0.0.1", ValueError, "IP address"),
        ("na\ud800me", ValueError, "'\\ud800' at character 2"),
    ],
)
def test_names_chroma_refuses_are_refused_in_our_words(
    client: ClientAPI, name: Any, error: type, fragment: str
) -> None:
    with pytest.raises(error) as raised:
        QZhouCollection.open(name, client=client, model=DEMO_MODEL)
    assert fragment in str(raised.value)
    if isinstance(name, str) and len(name) < 600:
        assert repr(name) in str(raised.value)


def test_the_name_rule_is_chromas_own(client: ClientAPI) -> None:
    """Every name we refuse, Chroma refuses, and every name we accept, Chroma accepts."""
    from qzhou_plugins.integrations.chroma.opening import check_name

    names = ["abc", "a.b", "A_b-C.9", "x" * 512, "x" * 513, "ab", "a b", "-ab", "ab_", "a..b", "1.2.3.4",
             "01.2.3.4", "999.1.1.1", "1.2.3", "ab\u00e9", "::1", "a\nb"]  # fmt: skip
    for name in names:
        try:
            check_name(name)
            ours = True
        except ValueError:
            ours = False
        try:
            client.get_or_create_collection(name, embedding_function=None)
            chromas = True
            client.delete_collection(name)
        except Exception:  # InvalidArgumentError of the Rust core
            chromas = False
        assert ours == chromas, name


def test_a_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("not a database")
    with pytest.raises(ValueError, match=r"path must be a folder \(an embedded Chroma database is one, "
                       r"created if missing\), and '.*notes\.txt' is a file; give another path"):  # fmt: skip
        QZhouCollection.open("notes", path=file, model=DEMO_MODEL)
    with pytest.raises(ValueError, match=r"notes\.txt', on the way to '.*notes\.txt/db', is a file"):
        QZhouCollection.open("notes", path=file / "db", model=DEMO_MODEL)
    with pytest.raises(TypeError, match="path must be a folder name"):
        QZhouCollection.open("notes", path=7, model=DEMO_MODEL)  # type: ignore[arg-type]
    assert file.read_text() == "not a database"


def test_the_default_path_is_chroma_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert DEFAULT_PATH == "./chroma"
    collection = QZhouCollection.open("notes", model=DEMO_MODEL)
    assert collection.add(TEXTS[:1]).added == 1
    assert (tmp_path / "chroma" / "chroma.sqlite3").is_file()


# -- the embedding function given nothing ------------------------------------------------------------


def test_the_embedding_function_given_nothing_says_so(client: ClientAPI) -> None:
    """Chroma's protocol wants at least one vector back; ``[]`` failed in Chroma's check of our result."""
    function = QZhouEmbeddingFunction(DEMO_MODEL)
    with pytest.raises(ValueError, match=r"QZhouEmbeddingFunction was given no documents \(an empty list\)"):
        function([])
    with pytest.raises(ValueError, match="was given no queries"):
        function.embed_query([])
    assert function.embed_documents([]).shape == (0, 384)  # the numpy side: an empty matrix
    # Through a real collection, Chroma refuses empty lists itself, before calling the function.
    raw = client.create_collection(unique_name(), embedding_function=function)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Non-empty lists are required"):
        raw.add(ids=[], documents=[])
    with pytest.raises(ValueError, match="Non-empty lists are required"):
        raw.query(query_texts=[])
    raw.add(ids=["1"], documents=[TEXTS[0]])
    assert raw.query(query_texts=["tea"], n_results=1)["ids"] == [["1"]]


# -- the former name of rerank_candidates --------------------------------------------------------------


def test_rerank_is_a_deprecated_alias_of_rerank_candidates(collection: QZhouCollection) -> None:
    collection.add(TEXTS)
    expected = collection.query("coffee", n_results=2, rerank_candidates=3)
    with pytest.warns(DeprecationWarning, match="rerank_candidates"):
        assert collection.query("coffee", n_results=2, rerank=3) == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collection.query("coffee", n_results=2, rerank_candidates=3)  # the new name does not warn
    with pytest.raises(TypeError, match="not both"):
        collection.query("coffee", rerank=3, rerank_candidates=3)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="rerank must be a positive"):
        collection.query("coffee", rerank=0)


def test_a_text_of_one_over_long_word_is_reported_on_the_collection_path(
    collection: QZhouCollection, caplog: pytest.LogCaptureFixture
) -> None:
    """The demo model's WordPiece vocabulary turns a word of over 100 characters into one unknown
    token: its vector says nothing of it, which ``add`` must say as the core does."""
    with caplog.at_level("WARNING", logger="qzhou_plugins"):
        collection.add([*TEXTS, "x" * 150])
    reported = [r.getMessage() for r in caplog.records if "mostly unknown tokens" in r.getMessage()]
    assert len(reported) == 1 and "1 of 4 texts" in reported[0] and "'xxxxx" in reported[0], reported


def test_a_text_that_is_one_unknown_token_is_reported_alone(
    collection: QZhouCollection, caplog: pytest.LogCaptureFixture
) -> None:
    """A run of emoji with no space is one word over WordPiece's 100-character limit: the whole text is
    one unknown token, and every such text would get the same vector."""
    with caplog.at_level("WARNING", logger="qzhou_plugins"):
        collection.add(["\U0001f375" * 101])
    reported = [r.getMessage() for r in caplog.records if "mostly unknown tokens" in r.getMessage()]
    assert len(reported) == 1 and "1 of 1 texts" in reported[0], reported


@pytest.mark.parametrize("as_path", [True, False])
def test_a_model_given_as_a_path_opens_new_and_existing_collections(
    tmp_path: Path, minilm_path: str, as_path: bool
) -> None:
    """``model=Path(...)`` is recorded and compared as its text, on every path through ``open``:
    creating, reopening (with a Path or the text), re-embedding; a model of another type is named."""
    model = Path(minilm_path)
    created = QZhouCollection.open("by-path", path=tmp_path, model=model if as_path else minilm_path)
    assert created.model == minilm_path
    created.add(["Green tea is brewed at 70 to 80 degrees."])
    for given in (model, minilm_path, Path(minilm_path + "/.")):  # another spelling of the same folder
        reopened = QZhouCollection.open("by-path", path=tmp_path, model=given, create=False)
        assert reopened.count() == 1 and reopened.model == minilm_path
    copy = reopened.reembed(model=model, new_name="by-path-copy")
    assert copy.count() == 1 and copy.model == minilm_path
    with pytest.raises(TypeError, match=r"model must be a hub id or a local folder \(a str or an "
                       r"os\.PathLike\), not int"):  # fmt: skip
        QZhouCollection.open("by-path", path=tmp_path, model=7)  # type: ignore[arg-type]


def test_show_progress_must_be_a_bool(collection: QZhouCollection) -> None:
    with pytest.raises(TypeError, match="show_progress must be True, False or None, not str 'x'"):
        collection.add(TEXTS, show_progress="x")  # type: ignore[arg-type]
    assert collection.count() == 0
