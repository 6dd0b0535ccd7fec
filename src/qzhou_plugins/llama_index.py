"""LlamaIndex adapter: ``from qzhou_plugins.llama_index import QZhouEmbedding, QZhouRerank``."""

from .integrations.llama_index import QZhouEmbedding, QZhouRerank

__all__ = ["QZhouEmbedding", "QZhouRerank"]
