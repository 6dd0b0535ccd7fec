"""Joining or starting a Ray cluster: the one place both Ray edges (bulk embedding on Ray Data,
serving on Ray Serve) connect, so that Ray's quirks are handled once.

Ray itself is never imported here: each edge imports it (with a message naming the ``ray`` extra
when it is missing) and hands the module in, so ``import qzhou_plugins`` never needs Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCAL = "local"
"""The address that means: start a Ray cluster on this machine for the job, and stop it after."""
_LOCAL_TOKEN = secrets.token_hex(32)
"""The token of clusters this process starts when none is configured (one per process)."""


@contextlib.contextmanager
def ray_cluster(ray: Any, address: str | None) -> Iterator[bool]:
    """Ray connected for the block: the caller's session if one is running, else a new one.

    Yields whether the block started a cluster of its own (stopped again at the end): a command
    that started its cluster may assume it knows all of it, one that joined another may not.

    A local cluster (``address`` None or ``local``) keeps its session files in a temporary folder
    (Ray's default, ``/tmp/ray``, fills up and is shared between users) removed afterwards, has no
    dashboard, and keeps Ray's token authentication on: when no token is configured it gets a
    random one through ``RAY_AUTH_TOKEN``, so nothing is written to the home folder.
    """
    if ray.is_initialized():
        yield False
        return
    session_dir = None
    if address in (None, LOCAL):
        session_dir = tempfile.mkdtemp(prefix="qzhou-ray-", dir="/tmp" if Path("/tmp").is_dir() else None)
        if not _token_configured():
            os.environ["RAY_AUTH_TOKEN"] = _LOCAL_TOKEN
        ray.init(
            address="local", include_dashboard=False, _temp_dir=session_dir, logging_level=logging.WARNING
        )
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield session_dir is not None
    finally:
        ray.shutdown()
        if session_dir is not None:
            shutil.rmtree(session_dir, ignore_errors=True)


def _token_configured() -> bool:
    if any(name in os.environ for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return True
    return (Path.home() / ".ray" / "auth_token").is_file()


def cores() -> int:
    """The cores this process may run on (all of the machine's where the OS cannot say)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def share_cpu_threads(workers: int) -> None:
    """Give torch this machine's cores divided between ``workers`` model copies.

    Ray starts actors with one thread (``OMP_NUM_THREADS=1`` for a one-CPU reservation); a model on
    the CPU then uses one core however many the machine has.
    """
    import torch

    torch.set_num_threads(max(1, cores() // workers))
