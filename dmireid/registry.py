"""Named registries of plug-ins (objectives, labelers, backbones, datasets) and plug-in imports.

    from dmireid.registry import Registry
    OBJECTIVES = Registry("objective", "method")        # kind, config key that names one
    OBJECTIVES.register("cc", ClusterContrast)
    OBJECTIVES.get("cc")                                # unknown name: one-line DmireidError

Each package owns its registry and exports a ``register_*`` function over it
(``dmireid.objectives.register_objective``, ``dmireid.pseudo_labels.register_labeler``,
``dmireid.models.register_backbone``, ``dmireid.data.register_dataset``). A user's module that
calls them is imported by :func:`import_plugins` (config key ``plugins: [module, ...]``) before any
lookup, on every rank.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, TypeVar

from .errors import DmireidError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table with one-line errors naming the config key and the known names.

    ``prefixes``: an entry registered as ``"timm:"`` serves every name ``"timm:<anything>"``.
    """

    def __init__(self, kind: str, key: str):
        self.kind, self.key = kind, key
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None, *, overwrite: bool = False):
        """``register(name, item)``, or ``@register(name)`` as a decorator; returns ``item``."""
        if not isinstance(name, str) or not name:
            raise DmireidError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(value: T) -> T:
            if name in self._items and not overwrite and self._items[name] is not value:
                raise DmireidError(f"{self.kind} {name!r} is already registered (pass overwrite=True to replace it)")
            self._items[name] = value
            return value

        return add if item is None else add(item)

    def lookup(self, name: str) -> tuple[str, T]:
        """``(registered name, item)`` for ``name``: an exact entry, else a ``"prefix:"`` entry."""
        if name in self._items:
            return name, self._items[name]
        if isinstance(name, str) and ":" in name:
            prefix = name.split(":", 1)[0] + ":"
            if prefix in self._items:
                return prefix, self._items[prefix]
        known = ", ".join(sorted(self._items)) or "none"
        raise DmireidError(f"{self.key} {name!r} is not a registered {self.kind} (known: {known}; "
                           f"a plug-in module listed in `plugins` can register more)")

    def get(self, name: str) -> T:
        return self.lookup(name)[1]

    def __contains__(self, name: str) -> bool:
        try:
            self.lookup(name)
        except DmireidError:
            return False
        return True

    def names(self) -> list[str]:
        return sorted(self._items)


def import_plugins(modules: Iterable[str]) -> list[Any]:
    """Import each plug-in module (a dotted name, or a path to a ``.py`` file); one-line errors."""
    imported = []
    for spec in modules or ():
        try:
            if spec.endswith(".py"):
                path = Path(spec).expanduser().absolute()
                if not path.is_file():
                    raise DmireidError(f"plugins: file {path} does not exist")
                name = f"dmireid_plugin_{path.stem}"
                if name not in sys.modules:
                    loader_spec = importlib.util.spec_from_file_location(name, path)
                    module = importlib.util.module_from_spec(loader_spec)
                    sys.modules[name] = module
                    loader_spec.loader.exec_module(module)
                imported.append(sys.modules[name])
            else:
                imported.append(importlib.import_module(spec))
        except DmireidError:
            raise
        except ImportError as exc:
            raise DmireidError(f"plugins: cannot import {spec!r} ({exc}); is it on PYTHONPATH?") from None
        except Exception as exc:  # noqa: BLE001 - a plug-in's own error, reported as one line
            raise DmireidError(f"plugins: importing {spec!r} failed ({type(exc).__name__}: {exc})") from None
    return imported


def call_with_options(factory: Callable[..., T], options: dict, what: str, **fixed) -> T:
    """``factory(**fixed, **options)``; an unknown option is a one-line error naming ``what``."""
    try:
        return factory(**fixed, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc) or "got multiple values" in str(exc):
            raise DmireidError(f"{what}: {exc}") from None
        raise
