"""``from qzhou_plugins.langchain import QZhouEmbeddings, QZhouReranker`` (needs ``langchain-core``)."""

from .integrations.langchain import QZhouEmbeddings, QZhouReranker

__all__ = ["QZhouEmbeddings", "QZhouReranker"]
