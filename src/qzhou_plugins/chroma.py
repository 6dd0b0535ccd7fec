"""Chroma integration: ``from qzhou_plugins.chroma import QZhouCollection, QZhouEmbeddingFunction``.

Importing this module registers :class:`QZhouEmbeddingFunction` with Chroma, so that a collection
created with it is reopened, in any process, with the same model and instructions. Needs the
``chroma`` extra (``pip install 'qzhou-plugins[chroma]'``). The code is in
:mod:`qzhou_plugins.integrations.chroma`.
"""

from .integrations.chroma import *  # noqa: F403  (the public names, listed once, in that package)
from .integrations.chroma import __all__ as __all__
