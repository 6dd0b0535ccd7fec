"""The one check that the ``serve`` extra is installed, with a message that says how to get it.

The server is an edge: ``import qzhou_plugins`` (and the CLI's parser, which adds the ``serve``
options) must work without FastAPI, uvicorn or prometheus-client, and a missing one must be named
with the install command instead of surfacing as a bare ``ModuleNotFoundError`` from deep inside.
"""

from __future__ import annotations

from importlib.util import find_spec

SERVE_PACKAGES = ("fastapi", "uvicorn", "prometheus_client")
INSTALL_HINT = "pip install 'qzhou-plugins[serve]'"


def require_serve_extra() -> None:
    """Raise an ImportError naming the missing packages and the extra that installs them."""
    missing = [name for name in SERVE_PACKAGES if find_spec(name) is None]
    if missing:
        raise ImportError(f"the server needs {', '.join(missing)}, from the 'serve' extra: {INSTALL_HINT}")
