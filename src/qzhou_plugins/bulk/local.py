"""The in-process job: the rows still to embed, read as they go, through the shared encoder.

No engine and no extra: this is the laptop path and the reference that the Ray job must equal.
Rows are embedded a chunk at a time (the encoder sorts each chunk by length and batches it by
tokens) and handed to the shard writer, so memory holds one chunk of texts and one shard of
vectors, whatever the size of the corpus.
"""

from __future__ import annotations

from ..encoder import Encoder
from .formats import storage_rows
from .ids import IdHashes, hash_ids
from .output import ShardWriter
from .progress import Progress, token_counts
from .sources import Source

CHUNK_ROWS = 512
"""Rows per encode call: long enough to sort by length well, short enough for a moving progress bar."""


def embed_in_process(
    source: Source,
    encoder: Encoder,
    *,
    prefix: str,
    what: str,
    done: IdHashes,
    writer: ShardWriter,
    progress: Progress,
    chunk_rows: int = CHUNK_ROWS,
) -> None:
    """Embed each row of ``source`` whose id is not in ``done`` and write it; flush the last shard."""
    for rows in source.batches(min(chunk_rows, writer.shard_rows)):
        keep = ~done.contains(hash_ids(rows.ids))
        if not keep.any():
            continue
        ids = [ident for ident, wanted in zip(rows.ids, keep, strict=True) if wanted]
        texts = [text for text, wanted in zip(rows.texts, keep, strict=True) if wanted]
        metadata = [data for data, wanted in zip(rows.metadata, keep, strict=True) if wanted]
        vectors = encoder.encode_with_prefix(texts, prefix, what=what, show_progress=False)
        writer.add(ids, storage_rows(vectors, writer.storage_dtype), texts, metadata)
        progress.update(len(ids), int(token_counts(encoder, prefix, texts).sum()))
    writer.flush()
