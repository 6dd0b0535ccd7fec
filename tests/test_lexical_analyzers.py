"""The analyzers: what terms English, Chinese and mixed text become, and Chinese lexical recall on
Chinese text (STS-B zh pairs as a small retrieval task)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, read_sts, shared_data
from qzhou_plugins.lexical import analyzer, open_index

english = analyzer("english")


def test_english_folds_case_and_width_drops_stopwords_and_stems() -> None:
    assert english("The Studies of RUNNING dogs") == ["studi", "run", "dog"]
    assert english("Ｆｕｌｌ－ｗｉｄｔｈ ﬁles") == ["full", "width", "file"]
    assert english("the patient's dose, don't") == ["patient", "dose", "dont"]
    assert english("v1.2.3 costs 3.5 dollars.") == ["v1.2.3", "cost", "3.5", "dollar"]
    assert english("snake_case AB-1234") == ["snake_cas", "ab", "1234"]  # stemmed as one word
    assert english("the of and... 😀") == []


def test_a_text_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(TypeError, match="must be a string, not bytes"):
        english(b"bytes")  # type: ignore[arg-type]


def test_unknown_analyzer_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown analyzer 'klingon'; choose one of english, chinese, auto"):
        analyzer("klingon")


def test_chinese_segments_chinese_and_stems_latin_words() -> None:
    pytest.importorskip("jieba", reason="jieba is the 'chinese' extra")
    chinese, auto = analyzer("chinese"), analyzer("auto")
    assert auto("我们正在测试Running的程序") == ["我们", "正在", "测试", "run", "的", "程序"]
    # search mode adds the dictionary words inside a long word
    assert {"人民", "共和国", "中华人民共和国"} <= set(chinese("中华人民共和国成立"))
    assert auto("中华人民共和国成立") == ["中华人民共和国", "成立"]
    # full-width Latin letters and digits are folded before segmentation
    assert auto("ＧＰＵ显卡") == ["gpu", "显卡"]


def test_auto_is_english_on_text_without_chinese() -> None:
    pytest.importorskip("jieba", reason="jieba is the 'chinese' extra")
    text = "Replacement part AB-1234 fits the 3.5 inch drive bay; the patients' studies."
    assert analyzer("auto")(text) == english(text)


def partner_found_first(tmp_path: Path, name: str, pairs: list[tuple[str, str]]) -> float:
    """How often the second sentence of a pair is the best lexical hit for the first."""
    with open_index(tmp_path / name, analyzer=name) as index:
        index.add([str(i) for i in range(len(pairs))], [second for _, second in pairs])
        hits = [index.search(first, 1) for first, _ in pairs]
    return sum(bool(found) and found[0].id == str(i) for i, found in enumerate(hits)) / len(pairs)


def test_chinese_text_is_found_lexically_far_more_often_with_jieba(tmp_path: Path) -> None:
    pytest.importorskip("jieba", reason="jieba is the 'chinese' extra")
    rows = read_sts(shared_data("stsb-zh") / "sts-test.tsv")
    pairs = [(first, second) for first, second, score in rows if score >= 3]
    assert len(pairs) > 500
    unsegmented = partner_found_first(tmp_path, "english", pairs)  # a whole Chinese run is one term
    segmented = partner_found_first(tmp_path, "chinese", pairs)
    precise = partner_found_first(tmp_path, "auto", pairs)
    assert unsegmented < 0.3
    assert segmented > 0.7 and precise > 0.65
    assert segmented > 2.5 * unsegmented


MISSING = """
import sys
from pathlib import Path
sys.modules[sys.argv[1]] = None  # as if the extra were not installed
from qzhou_plugins.lexical import analyzer, open_index
try:
    if sys.argv[1] == "tantivy":
        open_index(Path(sys.argv[2]), engine="tantivy")
    else:
        analyzer(sys.argv[2])
except ImportError as error:
    print(error)
print("folder made:", Path(sys.argv[2]).exists())
"""


@pytest.mark.parametrize(
    ("module", "argument", "extra"),
    [("Stemmer", "english", "lexical"), ("jieba", "auto", "chinese"), ("tantivy", "index", "tantivy")],
)
def test_a_missing_extra_is_named(tmp_path: Path, module: str, argument: str, extra: str) -> None:
    target = str(tmp_path / argument) if module == "tantivy" else argument
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", MISSING, module, target], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"pip install 'qzhou-plugins[{extra}]'" in done.stdout
    assert "folder made: False" in done.stdout  # nothing is created for an index that cannot open
