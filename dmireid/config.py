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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .data.sampler import CAMERA_RULES
from .data.transforms import ERASING
from .errors import DmireidError
from .memory.proxies import UPDATE_RULES
from .models.reid import POOLINGS
from .pseudo_labels.neighbours import BACKENDS

PRESET_DIR = Path(__file__).parent / "configs"

# the name lists belong to the components that act on them; the config keys take their values
UpdateRule = Literal[UPDATE_RULES]


@dataclass
class DataConfig:
    """Where the images come from and how they are fed."""

    name: str = "synthetic"  # a registered dataset: market1501 | msmt17 | dukemtmcreid | folder | synthetic | ...
    root: str | None = None  # dataset folder; synthetic: cache folder (default ~/.cache/dmireid)
    options: dict[str, Any] = field(default_factory=dict)  # the dataset loader's own options
    height: int = 256
    width: int = 128
    num_instances: int = 16  # K images per cluster in a P×K batch
    camera_aware: bool = True  # sampler prefers other cameras than the anchor's
    camera_rule: Literal[CAMERA_RULES] = "cc"  # how the camera-aware sampler picks the K-1 others (spread: ours)
    erasing: Literal[ERASING] = "cc"  # random-erasing implementation (CC's, or torchvision's)
    num_workers: int = 4
    corrupt_images: Literal["skip", "stop"] = "skip"  # unreadable training images


@dataclass
class ModelConfig:
    """Backbone, pooling and neck (spec §2)."""

    arch: str = "resnet50"  # a registered backbone: resnet18 | resnet34 | resnet50 | resnet50_ibn_a | timm:NAME
    pretrained: str | None = None  # none | imagenet (torch hub cache, else downloaded) | a weight file
    options: dict[str, Any] = field(default_factory=dict)  # the backbone's own options (e.g. timm's token_pool)
    pooling: Literal[POOLINGS] = "gem"
    gem_p: float = 3.0
    last_stride: int = 1
    bn_group_size: int = 64  # ghost BatchNorm group (0 = whole batch); 64 = the 4-GPU statistics
    channels_last: bool = True  # on CUDA only


@dataclass
class PseudoLabelConfig:
    """k-reciprocal Jaccard + DBSCAN (spec §1.2-3, §3)."""

    k1: int = 30
    k2: int = 6
    eps: float = 0.6
    min_samples: int = 4
    knn_backend: Literal[BACKENDS] = "auto"
    labeler: str = "jaccard_dbscan"  # a registered labeler: jaccard_dbscan | infomap | ground_truth | ...
    options: dict[str, Any] = field(default_factory=dict)  # a plug-in labeler's own options
    camera_balance: bool = False  # jaccard_dbscan: camera-aware k-reciprocal sets (CA-Jaccard CKRNNs + CLQE)
    k1_intra: int = 5  # camera_balance: reciprocal list length within the image's camera
    k1_inter: int = 20  # camera_balance: reciprocal list length among the other cameras
    k2_intra: int = 3  # camera_balance: query expansion, nearest in the own camera (self included)
    k2_inter: int = 3  # camera_balance: query expansion, nearest in the other cameras
    tracklets: bool = False  # tracklet-aware labels (pseudo_labels/tracklets.py): a tracklet is never split
    tracklet_level: Literal["image", "tracklet", "none"] = "image"  # cluster images (then vote), tracklet means, or none
    tracklet_min_samples: int = 2  # tracklet_level=tracklet: DBSCAN's min_samples, counted in tracklets
    tracklet_association: Literal["none", "mutual"] = "mutual"  # cross-camera mutual-NN links
    tracklet_link_similarity: float = 0.0  # the least cosine similarity of a link (camera-centred means)
    tracklet_noise: Literal["own", "drop"] = "own"  # a tracklet in no cluster: own pseudo-identity | outlier


@dataclass
class MemoryConfig:
    """Proxy memories and losses (spec §4). The CHOICE items of the spec are keys here."""

    temperature: float = 0.05
    momentum: float = 0.1  # weight of the old value in proxy momentum updates
    cc_update: UpdateRule = "sequential"  # method=cc
    dcp_updates: list[UpdateRule] = field(default_factory=lambda: ["hard", "mean"])  # method=dmi
    dcp_margins: list[float] = field(default_factory=lambda: [0.2, 0.0])  # one per DCP set: max(0, CE - margin)
    mip_instances: int = 16  # K_mip slots per cluster
    mip_weight: float = 1.0  # lambda
    mip_negatives_topk: int = 0  # 0 = every other cluster
    mip_source: Literal["momentum", "online"] = "online"  # which batch features replace the MIP slots
    ema_momentum: float = 0.999  # alpha of the momentum encoder
    ema_forward: Literal["train", "eval"] = "train"  # mode of the momentum encoder's forward on training batches
    ema_buffers: bool = False  # EMA of the BN buffers too (false: parameters only)
    camera_proxies: bool = False  # add CAP's camera-aware proxy losses (cc and dmi)
    single_camera_clusters: Literal["global", "own_camera"] = "global"  # own_camera: objectives/camera_local.py
    camera_intra_weight: float = 1.0  # weight of the intra-camera loss (CAP: 1)
    camera_inter_weight: float = 0.5  # weight of the inter-camera loss (CAP: 0.5, O2CAP: 1)
    camera_hard_negatives: int = 50  # hard negative proxies of the inter-camera loss (CAP/O2CAP bg_knn)
    camera_temperature: float = 0.07  # of the camera losses (CAP inv_beta, O2CAP temp)
    camera_momentum: float = 0.2  # weight of the old value in camera proxy updates (CAP inv_alpha)


@dataclass
class TrainConfig:
    """Optimisation and the epoch loop."""

    epochs: int = 50
    iters: int = 200
    batch_size: int = 256  # P*K
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    step_size: int = 20
    gamma: float = 0.1
    seed: int = 1
    eval_every: int = 10
    schedule: Literal["single", "two_stage"] = "single"
    stage1_epochs: int = 40  # two_stage: DCP-only epochs before DCP+MIP+EMA
    stage2_init: Literal["best", "last"] = "best"  # two_stage: weights stage 2 starts from
    amp: bool = True  # on CUDA only
    amp_dtype: Literal["bf16", "fp16"] = "bf16"  # bf16 falls back to fp16 + GradScaler without bf16 support
    amp_extract: bool = False  # autocast also for feature extraction (pseudo-labels, evaluation)
    deterministic: bool = False
    max_empty_epochs: int = 3  # stop after this many consecutive epochs with < 2 clusters
    extract_batch_size: int = 128
    save_pseudo_labels: bool = False  # write each epoch's labels to <run>/pseudo_labels/epoch_NNN.npy


@dataclass
class Config:
    """A whole run. ``output_dir`` is the run folder itself."""

    method: str = "dmi"  # a registered objective: cc | dmi | ...
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    output_dir: str = "runs/demo"
    plugins: list[str] = field(default_factory=list)  # modules (or .py files) imported before any lookup
    objective_options: dict[str, Any] = field(default_factory=dict)  # a plug-in objective's own settings
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


from .config_validation import check_plugins as check_plugin_settings  # noqa: E402  (needs the classes above)
from .config_validation import validate  # noqa: E402
