"""LlamaIndex adapter: ``from qzhou_plugins.llama_index import QZhouEmbedding, QZhouRerank, QZhouRetriever``

Needs ``llama-index-core``; the retriever needs a collection of the ``chroma`` extra.
"""

from .integrations.llama_index import QZhouEmbedding, QZhouRerank
from .integrations.llama_index_retriever import QZhouRetriever

__all__ = ["QZhouEmbedding", "QZhouRerank", "QZhouRetriever"]
