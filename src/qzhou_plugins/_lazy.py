"""Public names imported from their modules on first use, so that importing a package costs nothing.

torch, transformers and the frameworks take seconds to import; a package ``__init__`` that names
them eagerly makes ``import qzhou_plugins`` and ``qzhou-plugins --help`` pay that even when the
process only talks to a served model. A package lists where each public name lives and hands the
two module hooks made here to Python (PEP 562); type checkers read the same names from the
package's ``TYPE_CHECKING`` block.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, homes: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose ``homes`` map a module (relative to the
    package, like ``".encoder"``) to the public names it defines. The package still writes its
    ``__all__`` out, for readers and linters; a test holds the two lists equal."""
    home_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = home_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # the next lookup is a plain global
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home_of})

    return __getattr__, __dir__
