"""``embed``: a whole corpus to parquet vectors, in this process or on Ray Data.

The flags are defined beside the job, in :mod:`qzhou_plugins.bulk.options`, so that they and
:func:`qzhou_plugins.bulk.embed_corpus`'s arguments are one vocabulary; Ray is imported only when
``--ray`` asks for it.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..bulk.options import add_embed_arguments, embed_from_arguments
from .options import remote_options


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``embed`` to the sub-command set ``commands``."""
    embed = commands.add_parser(
        "embed",
        parents=[common],
        help="embed a corpus (JSON lines, parquet or documents) into parquet vectors, resumably",
        description="Embed every row of a corpus and write the vectors as parquet shards with a "
        "manifest; a rerun resumes (docs/bulk.md).",
    )
    add_embed_arguments(embed)
    embed.set_defaults(handler=command_embed)


def command_embed(args: argparse.Namespace) -> int:
    remote_options(args, not_for_the_model=("dtype",))  # --device beside --base-url: a usage error
    return embed_from_arguments(args)
