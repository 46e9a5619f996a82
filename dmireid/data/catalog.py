"""The dataset registry: a name -> loader table that plug-ins add to, and :func:`load_dataset`.

A loader is ``loader(root, **options) -> ReIDDataset``; its keyword parameters *are* its options
(config key ``data.options``, a mapping), so the known options are read from its signature, and
so are the values an option takes (its annotation — ``int``, ``Literal[...]``, ... — else its
default's type; :func:`dmireid.registry.check_options`, the check of every plug-in kind). A
``root`` parameter with a default (the synthetic set's ``None``) means the root may be omitted.

    @register_dataset("my_set")
    def load_my_set(root, min_height: int = 0, boxes: Literal["a", "b"] = "a") -> ReIDDataset: ...

    ds = load_dataset("My-Set", "/data", min_height=64)   # names: case, "-" and "_" ignored
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Callable

from ..errors import DmireidError
from ..registry import Registry, check_options
from .samples import ReIDDataset

log = logging.getLogger(__name__)

Loader = Callable[..., ReIDDataset]
DATASETS: Registry[Loader] = Registry("dataset", "data.name")
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def dataset_key(name: str) -> str:
    """The registered spelling of a dataset name: lower case without "-" and "_" (Market-1501 -> market1501)."""
    return name.lower().replace("-", "").replace("_", "")


def register_dataset(name: str, loader: Loader | None = None, *, overwrite: bool = False):
    """``register_dataset(name, loader)`` or ``@register_dataset(name)``: adds ``loader`` under
    :func:`dataset_key` of ``name``; the loader takes the root folder first, then its options."""

    def add(fn: Loader) -> Loader:
        _signature(fn, name)  # fail at registration, not at the first load
        return DATASETS.register(dataset_key(name), fn, overwrite=overwrite)

    if not isinstance(name, str) or not name:
        raise DmireidError(f"dataset name must be a non-empty string, got {name!r}")
    return add if loader is None else add(loader)


def find_dataset(name: str) -> tuple[str, Loader]:
    """``(registered name, loader)`` for ``name`` as written or as :func:`dataset_key`; one-line error."""
    if not isinstance(name, str):
        raise DmireidError(f"data.name must be a string, got {name!r}")
    key = name if name in DATASETS else dataset_key(name)
    return DATASETS.lookup(key if key in DATASETS else name)  # an unknown name: the error names it as written


def _signature(loader: Loader, name: str) -> list[inspect.Parameter]:
    try:
        params = list(inspect.signature(loader).parameters.values())
    except (TypeError, ValueError):
        raise DmireidError(f"dataset {name}: loader {loader!r} has no inspectable signature") from None
    if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise DmireidError(f"dataset {name}: loader {getattr(loader, '__name__', loader)!r} must take the root "
                           "folder as its first positional argument")
    return params


def dataset_options(name: str) -> tuple[str, ...]:
    """The option names the loader of ``name`` takes (its keyword parameters after the root)."""
    key, loader = find_dataset(name)
    return tuple(p.name for p in _signature(loader, key)[1:] if p.kind in _KEYWORD)


def check_dataset_options(name: str, options: dict[str, Any]) -> None:
    """One-line error for an option the loader of ``name`` does not take, an ill-typed (``int``,
    ``Literal[...]``, ...) or a missing one (:func:`dmireid.registry.check_options` on the loader's
    signature, the root excluded)."""
    key, loader = find_dataset(name)
    _signature(loader, key)
    check_options(loader, options, kind="dataset", name=key, key="data.options", positional=1)


def load_dataset(name: str, root: str | os.PathLike | None, **options) -> ReIDDataset:
    """Read the registered dataset ``name`` at ``root`` with the loader's ``options``.

    Built in: market1501 | dukemtmcreid | msmt17 | veri776 | personx | cuhk03 | cuhk01 | folder |
    synthetic. ``root`` is the dataset folder or a folder holding it under its usual name;
    ``cuhk03`` takes ``boxes`` (labeled | detected), ``cuhk01`` ``split_seed``; ``folder`` takes
    ``camera_pattern`` (regex on file names, group 1 = camera number); ``synthetic`` takes the
    :func:`make_synthetic` arguments (root None = a cache folder).
    """
    key, loader = find_dataset(name)
    check_dataset_options(key, options)
    if root is None and _signature(loader, key)[0].default is inspect.Parameter.empty:
        raise DmireidError(f"dataset {key} needs a root folder (data.root)")
    dataset = loader(root, **options)
    if not isinstance(dataset, ReIDDataset):
        raise DmireidError(f"dataset {key}: the loader returned {type(dataset).__name__}, expected a ReIDDataset")
    log.info("%s", dataset.statistics_table())
    return dataset
