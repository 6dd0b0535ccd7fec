"""``index --watch``: sync once, then again whenever the files change, until Ctrl-C.

Changes come from the operating system's file events (``watchfiles``: inotify, FSEvents, ...), grouped
for :data:`DEBOUNCE_MS` so that a save that writes a file in several steps is one sync. Each sync is
:func:`.indexing.sync_once` with unreadable files skipped (a file half written or deleted while it is
read), which are read again :data:`RETRY_MS` later; any other failure of a round is printed and the
watch goes on. Ctrl-C (SIGINT) lets a sync under way finish, then ends the watch with exit code 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import documents
from .errors import one_line

DEBOUNCE_MS = 800
"""Changes within this time of each other are synced together."""
RETRY_MS = 2000
"""How soon a file skipped as unreadable is read again, if nothing else changes meanwhile."""


Sync = Callable[..., Any]
"""One sync that prints its summary: :func:`.indexing.sync_once`."""


def watch(collection: Any, args: argparse.Namespace, sync_once: Sync) -> int:
    try:
        from watchfiles import watch as file_changes
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("index --watch needs watchfiles: pip install 'qzhou-plugins[cli]'") from error
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        last = _round(sync_once, collection, args, None)
        print(f"Watching {', '.join(args.paths)} for changes (Ctrl-C stops).", flush=True)
        folders = sorted({_watched(Path(path)) for path in args.paths})
        started = True
        for changes in file_changes(
            *folders,
            watch_filter=lambda _change, name: _relevant(Path(name), folders),
            debounce=DEBOUNCE_MS,
            rust_timeout=RETRY_MS,
            yield_on_timeout=True,
            stop_event=stop,
            raise_interrupt=False,
        ):
            # The first yield (changes, or none within RETRY_MS) syncs again: what changed before
            # the watcher started has no event.
            if not stop.is_set() and (changes or started or _retry(last)):
                last = _round(sync_once, collection, args, last)
            started = False
    finally:
        signal.signal(signal.SIGINT, previous)
    holds = collection.count()
    print(f"Stopped watching; collection {args.collection!r} holds {holds} chunk(s).", flush=True)
    return 0


def _round(sync_once: Sync, collection: Any, args: argparse.Namespace, last: Any) -> Any:
    """One sync, said only if it differs from the ``last`` one; None if it failed (retried soon)."""
    try:
        summary = sync_once(collection, args, skip_unreadable=True, said=last)
    except Exception as error:  # a round that fails is said, and the watch goes on
        print(f"warning: this round of sync failed, retrying: {one_line(error)}", file=sys.stderr, flush=True)
        return None
    sys.stdout.flush()
    return summary


def _retry(last: Any) -> bool:
    """Whether the last round failed or skipped a file to read again (half written, or just gone)."""
    return last is None or any(reason.endswith("read again next time") for _file, reason in last.skipped)


def _watched(path: Path) -> Path:
    """The folder to watch for ``path``: itself, or a file's folder (an editor may replace the file)."""
    return path.resolve() if path.is_dir() else path.resolve().parent


def _relevant(path: Path, folders: list[Path]) -> bool:
    """A change to a file that ``index`` would read (hidden files and folders within left out)."""
    if path.suffix.lower() not in documents.SUPPORTED_SUFFIXES:
        return False
    for folder in folders:
        if path.is_relative_to(folder):
            return not any(part.startswith(".") for part in path.relative_to(folder).parts)
    return False
