"""Package attributes loaded on first use (PEP 562).

A package whose ``__init__`` re-exports its modules' names makes every importer pay for
all of them; ``cman stats --no-stream`` answered by a monitor, or asking which engines
answer, needs one small part. ``__getattr__ = lazy_attributes(__name__, {...})`` hands each
name out from its module when it is first asked for; the package keeps a literal
``__all__`` and ``if TYPE_CHECKING:`` imports for linters and type checkers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: name -> the submodule (relative) that defines it."""
    where = dict(where)

    def __getattr__(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{where[name]}", package), name)

    return __getattr__
