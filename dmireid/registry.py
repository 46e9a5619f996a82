"""Named registries of plug-ins (objectives, labelers, backbones, datasets) and plug-in imports.

    from dmireid.registry import Registry
    OBJECTIVES = Registry("objective", "method")        # kind, config key that names one
    OBJECTIVES.register("cc", ClusterContrast)
    OBJECTIVES.get("cc")                                # unknown name: one-line DmireidError

Each package owns its registry and exports a ``register_*`` function over it
(``dmireid.objectives.register_objective``, ``dmireid.pseudo_labels.register_labeler``,
``dmireid.models.register_backbone``, ``dmireid.data.register_dataset``). A user's module that
calls them is imported by :func:`import_plugins` (config key ``plugins: [module, ...]``) before any
lookup: on every rank by ``train``, and by the model-use commands only when named (``--plugins``).
Loading a config or a checkpoint imports nothing. :func:`check_options` is the one option check of
the four plug-in kinds (from the factory's signature).
"""

from __future__ import annotations

import collections.abc
import importlib
import importlib.util
import inspect
import numbers
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

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


def check_options(factory: Callable[..., Any], options: Mapping[str, Any], *, kind: str, name: str, key: str,
                  positional: int = 0, given: Mapping[str, str] | None = None) -> None:
    """The one option check of every plug-in kind, read from ``factory``'s signature.

    ``options``: the free mapping of config key ``key`` (``data.options``, ``model.options``,
    ``pseudo_labels.options``, ``objective_options``); ``positional``: how many leading parameters
    the caller fills (a dataset's root, an objective's context); ``given``: parameter -> the config
    key the caller fills it from (``{"k1": "pseudo_labels.k1"}``). An option the factory does not
    take, one that ``given`` fills, a value of the wrong type (annotation, else the default's type)
    or a required parameter left out is a one-line :class:`DmireidError` naming ``key.option``.
    """
    params = _parameters(factory)
    if params is None:  # no inspectable signature (a C callable): nothing to check
        return
    given = dict(given or {})
    named = {p.name: p for p in params[positional:] if p.kind in _KEYWORD}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    hints = _hints(factory)
    for option, value in options.items():
        if option in given:
            raise DmireidError(f"{key}.{option}: {kind} {name!r} gets {option} from {given[option]}; set that key")
        param = named.get(option)
        if param is None:
            if takes_any:
                continue
            known = ", ".join(n for n in named if n not in given) or "none"
            raise DmireidError(f"{key}.{option}: unknown option(s) {option} for {kind} {name!r} (known: {known})")
        expected = hints.get(option, _type_of_default(param.default))
        if expected is not None and not fits(value, expected):
            raise DmireidError(f"{key}.{option}={value!r}: {kind} {name!r} expects {describe_type(expected)}")
    missing = [n for n, p in named.items() if p.default is inspect.Parameter.empty and n not in options
               and n not in given]
    if missing:
        raise DmireidError(f"{key}.{missing[0]}: {kind} {name!r} needs this option ({key} misses "
                           f"{', '.join(missing)})")


_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _parameters(factory) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None


def _hints(factory) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else getattr(factory, "__func__", factory)
    try:
        return typing.get_type_hints(inspect.unwrap(target))
    except Exception:  # noqa: BLE001 - an annotation that does not resolve is not checked
        return {}


def _type_of_default(default: Any) -> Any:
    if default is inspect.Parameter.empty or default is None:
        return None
    return {bool: bool, int: int, float: float, str: str, list: list, tuple: list, dict: dict}.get(type(default))


def fits(value: Any, annotation: Any) -> bool:
    """Whether a config value (YAML scalars, lists, mappings) can be passed where ``annotation`` is
    expected: numbers for float, any list for list/tuple/Sequence, str for Path; unknown kinds pass."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arm) for arm in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)  # True is not 1
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (Path, os.PathLike):
        return isinstance(value, (str, os.PathLike))
    container = origin or annotation
    if container in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args))
        return not args or all(fits(v, args[0]) for v in value)
    if container in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return not inspect.isclass(container) or isinstance(value, container)


def describe_type(annotation: Any) -> str:
    """``int`` -> "an integer", ``Literal["a", "b"]`` -> "one of a, b", ``str | None`` -> "a string or none"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(arm) for arm in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "none",
             list: "a list", tuple: "a list", dict: "a mapping", Path: "a path"}
    container = origin or annotation
    if container in words:
        return words[container]
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))
