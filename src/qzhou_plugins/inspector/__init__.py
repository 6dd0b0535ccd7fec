"""``qzhou-plugins inspect``: a local page that shows what retrieval returned, and why.

When an answer is wrong, the first question is what retrieval returned and why. The facts that
explain a result exist (each hit's dense and lexical ranks and scores, the fused score, the rerank
score, the instructed query, the chunk's source and metadata, the collection's model and analyzer);
this page shows them side by side, over the same collection API Python users call, and plots the
evaluation's JSON outputs.

The package follows the page: ``catalog`` opens the collections (once each, as ``query`` does),
``search`` turns a request into :class:`~qzhou_plugins.chroma.QueryOptions` and explains each hit,
``chunks`` is the document view, ``evaluations`` and ``plots`` turn ``eval --json`` files into SVG,
``app`` is the HTTP app (FastAPI and uvicorn: the ``inspect`` extra, imported only when the page
starts), ``static`` the page itself (HTML, JavaScript and CSS written by hand: no network, no build).
"""

from __future__ import annotations

from importlib.util import find_spec

INSPECT_PACKAGES = ("fastapi", "uvicorn", "prometheus_client", "chromadb")
INSTALL_HINT = "pip install 'qzhou-plugins[inspect]'"


def require_inspect_extra() -> None:
    """Raise an ImportError naming the missing packages and the extra that installs them."""
    missing = [name for name in INSPECT_PACKAGES if find_spec(name) is None]
    if missing:
        raise ImportError(
            f"the inspector needs {', '.join(missing)}, from the 'inspect' extra: {INSTALL_HINT}"
        )
