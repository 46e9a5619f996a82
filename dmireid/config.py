"""Typed run configuration: dataclasses, YAML presets and ``key=value`` overrides.

A :class:`Config` is built once (``load_config``) and passed down explicitly; nothing reads a
global. Defaults are the method spec's (DMI on Market-1501, one GPU); where the spec and the recipe that
reached the published numbers (Trangle12/DCMIP) differ, the recipe's values are the defaults and ours
are options (``data.camera_rule``, ``data.erasing``, ``memory.dcp_margins``, ``memory.mip_source``,
``memory.ema_forward``, ``memory.ema_buffers``, ``train.amp_extract``; docs/reproducing.md).

    cfg = load_config("smoke", ["train.epochs=3", "method=cc"])
    cfg.train.epochs  # 3

Presets are the YAML files in ``dmireid/configs`` (``configs/`` in the repository); ``--config``
takes a preset name or a path.
"""

from __future__ import annotations

import dataclasses
import types
import typing

from pathlib import Path
from typing import Any, Literal

import yaml

from .config_schema import (Config, DataConfig, MemoryConfig, ModelConfig, PseudoLabelConfig, TrainConfig,  # noqa: F401
                            UpdateRule)
from .config_validation import check_plugins as check_plugin_settings
from .config_validation import validate
from .errors import DmireidError

PRESET_DIR = Path(__file__).parent / "configs"

def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a ``key=value`` string) to ``annotation`` or raise."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        if isinstance(value, str) or value in args:
            if value in args:
                return value
        raise DmireidError(f"config key {key}: {value!r} is not one of {', '.join(map(str, args))}")
    if origin is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, list):
            raise DmireidError(f"config key {key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise DmireidError(f"config key {key}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise DmireidError(f"config key {key}: expected a number, got {value!r}")
        try:
            number = annotation(value) if annotation is float else int(str(value), 0) if isinstance(value, str) else value
        except (TypeError, ValueError):
            raise DmireidError(f"config key {key}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and (not isinstance(number, int) or isinstance(number, bool)):
            if isinstance(number, float) and number.is_integer():
                return int(number)
            raise DmireidError(f"config key {key}: expected an integer, got {value!r}")
        return number
    if annotation is str:
        return str(value)
    if origin is dict or annotation is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else {}
        if not isinstance(value, dict):
            raise DmireidError(f"config key {key}: expected a mapping, got {value!r}")
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    """A free-mapping value: ``key=value`` strings are read as YAML scalars/lists (``"24"`` -> 24)."""
    if isinstance(value, str):
        try:
            return yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError:
            return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    types_ = _field_types(type(obj))
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in types_:
            known = ", ".join(f"{prefix}{n}" for n in types_)
            raise DmireidError(f"unknown config key {key!r} (known keys: {known})")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise DmireidError(f"config key {key}: expected a mapping of sub-keys, got {value!r}")
            _apply(current, value, key + ".")
        elif isinstance(current, dict) and isinstance(value, dict):
            merged = dict(current)  # free mappings merge key by key (preset <- overrides)
            merged.update(_coerce(value, types_[name], key))
            setattr(obj, name, merged)
        else:
            setattr(obj, name, _coerce(value, types_[name], key))


# Keys of earlier versions -> their place now; applied to presets, overrides and checkpoint configs.
LEGACY_SYNTHETIC_KEYS = {"synthetic_ids": "num_ids", "synthetic_cameras": "num_cameras", "synthetic_seed": "seed",
                         "synthetic_height": "height", "synthetic_width": "width"}


# keys added after 0.1 whose default is not what a 0.1 run did: a 0.1 run resumes/evaluates as it trained
BEHAVIOUR_OF_0_1 = (("data", "camera_rule", "spread"), ("data", "erasing", "torchvision"),
                    ("memory", "ema_forward", "eval"), ("memory", "ema_buffers", True),
                    ("train", "amp_extract", True))


def upgrade_config_dict(values: dict[str, Any]) -> dict[str, Any]:
    """Map keys written by earlier dmireid versions to today's (returns a new nested dict).

    - ``data.synthetic_*`` (0.1) -> ``data.options`` (dropped for a dataset that is not synthetic);
    - ``memory.dcp_margin: m`` (0.1, applied to ``hard`` sets only) -> ``memory.dcp_margins``, one per set;
    - a 0.1 config gets 0.1's behaviour for keys added since (``BEHAVIOUR_OF_0_1``), not today's defaults.
    """
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (values or {}).items()}
    data = values.get("data")
    if isinstance(data, dict) and any(k in data for k in LEGACY_SYNTHETIC_KEYS):
        old = {LEGACY_SYNTHETIC_KEYS[k]: data.pop(k) for k in list(data) if k in LEGACY_SYNTHETIC_KEYS}
        if str(data.get("name", "synthetic")) == "synthetic":
            data["options"] = {**old, **(data.get("options") or {})}
    memory = values.get("memory")
    if isinstance(memory, dict) and "dcp_margin" in memory:  # a whole 0.1 config (it wrote every key)
        for section, key, old_value in BEHAVIOUR_OF_0_1:
            values.setdefault(section, {})
            if isinstance(values[section], dict):
                values[section].setdefault(key, old_value)
        margin = memory.pop("dcp_margin")
        if "dcp_margins" not in memory:
            rules = memory.get("dcp_updates") or MemoryConfig().dcp_updates
            if isinstance(rules, str):
                rules = _coerce(rules, list[str], "memory.dcp_updates")
            memory["dcp_margins"] = [margin if rule == "hard" else 0.0 for rule in rules]
    return values


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.epochs=3", "method=cc"]`` -> ``{"train": {"epochs": "3"}, "method": "cc"}``."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise DmireidError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DmireidError(f"override {item!r} conflicts with an earlier override")
        node[parts[-1]] = value
    return nested


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A preset name (``demo``, ``smoke``, ``dmi_market1501``) or a YAML path -> existing path."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if preset.is_file():
        return preset
    presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    raise DmireidError(f"config file {str(name_or_path)!r} not found (presets: {presets})")


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict, e.g. a checkpoint's.

    Parsing only: no plug-in is imported and no registered name looked up (a checkpoint's objective
    or labeler may come from a plug-in that is absent where the checkpoint is used)."""
    cfg = Config()
    _apply(cfg, upgrade_config_dict(values))
    validate(cfg)
    return cfg


# (section, name key, options key): a free mapping belongs to the plug-in named beside it
PLUGIN_OPTIONS = ((None, "method", "objective_options"), ("data", "name", "options"),
                  ("pseudo_labels", "labeler", "options"), ("model", "arch", "options"))


def drop_options_of_replaced_plugins(cfg: Config, overrides: dict[str, Any]) -> None:
    """An override that names another dataset / labeler / objective drops the preset's options for
    the old one (``--config smoke data.name=market1501`` must not pass the synthetic options on)."""
    for section, name_key, options_key in PLUGIN_OPTIONS:
        values = overrides if section is None else overrides.get(section)
        target = cfg if section is None else getattr(cfg, section)
        if isinstance(values, dict) and name_key in values and str(values[name_key]) != getattr(target, name_key):
            setattr(target, options_key, {})


def load_config(config: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None, *, check_plugins: bool = True) -> Config:
    """Defaults <- ``base`` dict (e.g. a checkpoint's config) <- YAML preset/file <- ``key=value`` overrides.

    Imports nothing: every value is checked, and with ``check_plugins`` the four plug-in names and
    their options too (:func:`~dmireid.config_validation.check_plugins`; a name that none of the
    registries knows yet is left for ``train``, which imports ``plugins`` first, when the config
    lists any). ``check_plugins=False``: names are looked up when their object is built.
    """
    cfg = Config()
    _apply(cfg, upgrade_config_dict(base))
    if config is not None:
        path = resolve_config_path(config)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DmireidError(f"config file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise DmireidError(f"config file {path}: expected a mapping of keys at the top level")
        _apply(cfg, upgrade_config_dict(values))
    override_values = upgrade_config_dict(parse_overrides(overrides or []))
    drop_options_of_replaced_plugins(cfg, override_values)
    _apply(cfg, override_values)
    validate(cfg)
    if check_plugins:
        check_plugin_settings(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

