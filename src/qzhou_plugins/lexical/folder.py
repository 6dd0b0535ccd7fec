"""An index's folder: the settings it records, its creation and its removal.

The folder is the index's alone: the engine's files and ``lexical.json``, the settings record. The
record is written first, when the folder is created, and published with a hard link (atomic, and
refused if another process published one first, whose settings are then checked instead), so a
crash never leaves half a record and two processes creating one index agree on its settings. A
folder that holds other files and no record is not an index: it is neither used nor removed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from .settings import (
    FORMAT_VERSION,
    SETTINGS_FILE,
    LexicalIndexError,
    LexicalSettings,
    LexicalSettingsError,
)


def index_folder(path: Any) -> Path:
    """``path`` as a folder path (it may not exist yet), refusing a file or a non-path."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a lexical index path must be a str or os.PathLike, not {type(path).__name__}")
    folder = Path(os.fspath(path)).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise LexicalIndexError(f"{folder} is a file, not a folder: a lexical index is a folder of its own")
    return folder


def settle(folder: Path, asked: dict[str, Any], *, create: bool) -> tuple[LexicalSettings, bool]:
    """The settings of the index in ``folder`` and whether it is new, creating its record if allowed.

    ``asked`` maps engine, analyzer, k1 and b to a value or None ("as recorded", or the default for a
    new index). An existing index recorded with other values is refused.
    """
    chosen = LexicalSettings.chosen(**asked)  # each value given is valid, whatever the record says
    recorded = read_settings(folder)
    if recorded is None:
        if not create:
            raise LexicalIndexError(f"there is no lexical index in {folder} (create=False)")
        if _holds_other_files(folder):
            raise LexicalIndexError(
                f"{folder} holds files but no {SETTINGS_FILE}: it is not a lexical index, and is left alone; "
                "give an empty or new folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
        if _publish(folder, chosen):
            return chosen, True
        recorded = read_settings(folder)  # another process created it first: check its settings
        assert recorded is not None
    differences = recorded.differences(asked)
    if differences:
        raise mismatch_error(folder, differences)
    return recorded, False


def read_settings(folder: Path) -> LexicalSettings | None:
    """The settings recorded in ``folder`` (None: there is no record)."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise LexicalIndexError(f"{path} cannot be read as a lexical index record: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("format"), int):
        raise LexicalIndexError(f"{path} is not a lexical index record (no format number)")
    if record["format"] != FORMAT_VERSION:
        raise LexicalIndexError(
            f"the lexical index in {folder} has format {record['format']}, and this version of "
            f"qzhou-plugins reads format {FORMAT_VERSION}; remove it (qzhou_plugins.lexical.remove_index) "
            "and build it again"
        )
    known = {field.name for field in fields(LexicalSettings)}
    try:
        return LexicalSettings(**{key: value for key, value in record.items() if key in known})
    except (TypeError, ValueError) as error:
        raise LexicalIndexError(f"{path} records settings this version cannot use: {error}") from None


def _holds_other_files(folder: Path) -> bool:
    """Whether ``folder`` holds anything but what an interrupted :func:`_publish` may leave."""
    if not folder.is_dir():
        return False
    return any(not entry.name.startswith(f".{SETTINGS_FILE}.") for entry in folder.iterdir())


def _publish(folder: Path, settings: LexicalSettings) -> bool:
    """Write the record of a new index; False if another process published one first."""
    temporary = folder / f".{SETTINGS_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(asdict(settings), indent=2) + "\n", "utf-8")
    try:
        os.link(temporary, folder / SETTINGS_FILE)
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    return True


def mismatch_error(folder: Path, differences: list[str]) -> LexicalSettingsError:
    listed = "".join(f"\n  - {line}" for line in differences)
    return LexicalSettingsError(
        f"the lexical index in {folder} was built with other settings, and its terms or scores would not "
        f"match what was asked:{listed}\nThe index was left untouched. To proceed: open it with these "
        "settings left out (None) to use what it records, or remove it (qzhou_plugins.lexical.remove_index) "
        "and build it again with the new ones."
    )


def remove_index(path: str | os.PathLike[str]) -> bool:
    """Delete the lexical index in ``path`` with its folder; False if there was none.

    A folder holding files but no index record is refused (LexicalIndexError), never deleted. Close
    the index first in this process (:meth:`LexicalIndex.remove` does both).
    """
    folder = index_folder(path)
    if not folder.exists():
        return False
    if not (folder / SETTINGS_FILE).is_file():
        if _holds_other_files(folder):
            raise LexicalIndexError(
                f"{folder} holds no {SETTINGS_FILE}: it is not a lexical index, and is left alone"
            )
        shutil.rmtree(folder)
        return False
    shutil.rmtree(folder)
    return True
