"""Moved names keep their old import path for one release, with a warning naming the new one
(timm's way): an old module becomes a stub whose ``__getattr__`` is :func:`moved_names`.

    __getattr__ = moved_names(__name__, "dmireid.embedding.extract")   # in the old module
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable, Mapping

REMOVED_IN = "0.4"


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    """A DeprecationWarning: ``old`` is now ``new`` (both dotted paths)."""
    warnings.warn(f"{old} moved to {new}; the old path is removed in dmireid {REMOVED_IN}", DeprecationWarning,
                  stacklevel=stacklevel)


def moved_names(old_module: str, new_module: str | Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` serving names that moved out of ``old_module``.

    ``new_module``: the module every name moved to, or ``{name: new module}`` for some names only
    (any other name is an AttributeError). Each access warns with both paths.
    """

    def __getattr__(name: str) -> Any:
        target = new_module.get(name) if isinstance(new_module, Mapping) else new_module
        if target is None or name.startswith("__"):
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        try:
            value = getattr(importlib.import_module(target), name)
        except AttributeError:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}") from None
        warn_moved(f"{old_module}.{name}", f"{target}.{name}")
        return value

    return __getattr__
