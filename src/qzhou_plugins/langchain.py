"""LangChain adapter: ``from qzhou_plugins.langchain import QZhouEmbeddings, QZhouReranker, QZhouRetriever``.

Needs ``langchain-core``; the retriever needs a collection of the ``chroma`` extra.
"""

from .integrations.langchain import QZhouEmbeddings, QZhouReranker
from .integrations.langchain_retriever import QZhouRetriever

__all__ = ["QZhouEmbeddings", "QZhouReranker", "QZhouRetriever"]
