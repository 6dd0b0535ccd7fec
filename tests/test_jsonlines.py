"""The one JSON-lines reader: line numbers as an editor shows them, every problem named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qzhou_plugins.jsonlines import JSONLinesError, json_objects_in_text, read_json_objects


def test_line_numbers_count_blank_lines_and_line_separators_stay_inside_strings(tmp_path: Path) -> None:
    records = [{"text": "one"}, {"text": "two\u2028still two\x85and\u2029two"}]
    content = json.dumps(records[0]) + "\n\n" + json.dumps(records[1], ensure_ascii=False) + "\r\n"
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + content.encode("utf-8"))  # with a byte-order mark
    assert list(read_json_objects(path)) == [(1, records[0]), (3, records[1])]
    assert list(json_objects_in_text(content, "a.jsonl")) == [(1, records[0]), (3, records[1])]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": 1}\n{"a": \n', r"a\.jsonl:2: not valid JSON \(Expecting value\)"),
        (b'{"a": 1}\n\n["a"]\n', r"a\.jsonl:3: expected a JSON object"),
        (
            b'{"a": 1}\n{"a": "\xe9"}\n',
            r"a\.jsonl:2: not UTF-8 text \(invalid continuation byte at byte 16\)",
        ),
    ],
)
def test_bad_lines_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(content)
    with pytest.raises(JSONLinesError, match=message):
        list(read_json_objects(path))


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(JSONLinesError, match=r"folder\.jsonl: cannot be read \(Is a directory\)"):
        (tmp_path / "folder.jsonl").mkdir()
        list(read_json_objects(tmp_path / "folder.jsonl"))
    with pytest.raises(JSONLinesError, match=r"absent\.jsonl: cannot be read \(No such file or directory\)"):
        list(read_json_objects(tmp_path / "absent.jsonl"))
