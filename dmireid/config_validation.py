"""Every config value a later stage would reject, rejected before any work starts (one line each).

:func:`validate` (ranges and consistency) runs whenever a config is read, also a checkpoint's; it
imports nothing. :func:`check_plugins` looks the four plug-in names up and checks their options
against the factories' signatures (:func:`dmireid.registry.check_options`): leniently in
:func:`~dmireid.config.load_config` (a name no registry knows yet waits for ``train``, which imports
``plugins`` first), strictly when an object is built (:mod:`dmireid.build`).
:func:`check_resumable`: which keys may change when a run is resumed.
"""

from __future__ import annotations

from pathlib import Path

from .config_schema import Config
from .data import check_dataset_options, find_dataset
from .errors import DmireidError
from .models import BACKBONES, check_backbone_options
from .objectives import OBJECTIVES, check_objective_options
from .pseudo_labels import LABELERS, check_eps, check_labeler_options

PLUGIN_KINDS = ("objective", "labeler", "backbone", "dataset")

# Keys that may change when a run is resumed; every other key must match the checkpoint's config.
RESUMABLE_KEYS = {"train.epochs", "train.eval_every", "output_dir", "device", "data.root", "data.num_workers",
                  "train.extract_batch_size", "train.max_empty_epochs", "data.corrupt_images",
                  "train.save_pseudo_labels", "plugins"}


def _range_checks(cfg: Config) -> list[tuple[bool, str]]:
    d, m, p, mem, t = cfg.data, cfg.model, cfg.pseudo_labels, cfg.memory, cfg.train
    return [
        # train
        (t.epochs >= 1, "train.epochs must be >= 1"),
        (t.iters >= 1, "train.iters must be >= 1"),
        (t.batch_size >= 1, "train.batch_size must be >= 1"),
        (t.lr > 0, "train.lr must be > 0"),
        (t.weight_decay >= 0, "train.weight_decay must be >= 0"),
        (t.step_size >= 1, "train.step_size must be >= 1"),
        (t.gamma > 0, "train.gamma must be > 0"),
        (t.seed >= 0, "train.seed must be >= 0"),
        (t.eval_every >= 1, "train.eval_every must be >= 1"),
        (t.max_empty_epochs >= 1, "train.max_empty_epochs must be >= 1"),
        (t.extract_batch_size >= 1, "train.extract_batch_size must be >= 1"),
        (t.schedule == "single" or 1 <= t.stage1_epochs < t.epochs,
         "train.stage1_epochs must be in [1, train.epochs) with train.schedule=two_stage"),
        # data
        (d.num_instances >= 1, "data.num_instances must be >= 1"),
        (d.num_instances <= t.batch_size,
         f"data.num_instances ({d.num_instances}) must be <= train.batch_size ({t.batch_size})"),
        (d.num_instances >= 1 and t.batch_size % d.num_instances == 0,
         f"train.batch_size ({t.batch_size}) must be a multiple of data.num_instances ({d.num_instances})"),
        (d.height >= 16 and d.width >= 16, "data.height and data.width must be >= 16"),
        (d.num_workers >= 0, "data.num_workers must be >= 0"),
        # model
        (m.bn_group_size >= 0, "model.bn_group_size must be >= 0"),
        (m.bn_group_size == 0 or t.batch_size % m.bn_group_size == 0 or m.bn_group_size >= t.batch_size,
         f"train.batch_size ({t.batch_size}) must be a multiple of model.bn_group_size ({m.bn_group_size})"),
        (m.gem_p > 0, "model.gem_p must be > 0"),
        (m.last_stride in (1, 2), "model.last_stride must be 1 or 2"),
        # pseudo labels
        (p.min_samples >= 1, "pseudo_labels.min_samples must be >= 1"),
        (p.k1 >= 2 and p.k2 >= 1, "pseudo_labels.k1 must be >= 2 and k2 >= 1"),
        (p.k2 <= p.k1, f"pseudo_labels.k2 ({p.k2}) must be <= pseudo_labels.k1 ({p.k1})"),
        (min(p.k1_intra, p.k1_inter, p.k2_intra, p.k2_inter) >= 1,
         "pseudo_labels.k1_intra, k1_inter, k2_intra and k2_inter must be >= 1"),
        (p.tracklet_min_samples >= 1, "pseudo_labels.tracklet_min_samples must be >= 1"),
        (not p.camera_balance or p.labeler == "jaccard_dbscan",
         f"pseudo_labels.camera_balance applies to the jaccard_dbscan labeler, not {p.labeler!r}"),
        # memory
        (len(mem.dcp_updates) >= 1, "memory.dcp_updates must name at least one rule"),
        (len(mem.dcp_margins) <= len(mem.dcp_updates),
         f"memory.dcp_margins has {len(mem.dcp_margins)} value(s) but memory.dcp_updates names only "
         f"{len(mem.dcp_updates)} set(s): give at most one margin per set"),
        (all(x >= 0 for x in mem.dcp_margins), "memory.dcp_margins must be >= 0"),
        (0 <= mem.momentum < 1, "memory.momentum must be in [0, 1)"),
        (0 <= mem.ema_momentum < 1, "memory.ema_momentum must be in [0, 1)"),
        (mem.temperature > 0, "memory.temperature must be > 0"),
        (mem.mip_instances >= 1, "memory.mip_instances must be >= 1"),
        (mem.mip_weight >= 0, "memory.mip_weight must be >= 0"),
        (mem.mip_negatives_topk >= 0, "memory.mip_negatives_topk must be >= 0"),
        (mem.camera_intra_weight >= 0, "memory.camera_intra_weight must be >= 0"),
        (mem.camera_inter_weight >= 0, "memory.camera_inter_weight must be >= 0"),
        (mem.camera_hard_negatives >= 0, "memory.camera_hard_negatives must be >= 0"),
        (mem.camera_temperature > 0, "memory.camera_temperature must be > 0"),
        (0 <= mem.camera_momentum < 1, "memory.camera_momentum must be in [0, 1)"),
        # run
        (bool(str(cfg.output_dir).strip()), "output_dir must not be empty"),
    ]


def _check_device(device: str) -> None:
    if device == "auto" or device == "cpu" or device == "cuda":
        return
    if device.startswith("cuda:") and device[5:].isdigit():
        return
    raise DmireidError(f"invalid config: device {device!r} is not auto, cpu, cuda or cuda:N")


def check_pretrained_file(pretrained: str | None) -> None:
    """``model.pretrained`` names imagenet, none or an existing file (checked when training starts:
    a checkpoint's config may name a file of another machine)."""
    from .models import normalise_pretrained

    weights = normalise_pretrained(pretrained)
    if isinstance(weights, Path) and not weights.is_file():
        raise DmireidError(f"invalid config: model.pretrained {pretrained!r} is neither imagenet, none nor an "
                           f"existing weight file")


def complete(cfg: Config) -> None:
    """Fill what a shorter setting implies: sets without a margin in ``memory.dcp_margins`` get 0."""
    missing = len(cfg.memory.dcp_updates) - len(cfg.memory.dcp_margins)
    if missing > 0:
        cfg.memory.dcp_margins = [*cfg.memory.dcp_margins, *[0.0] * missing]


def validate(cfg: Config) -> None:
    """Range and consistency checks of every key (imports nothing, looks no name up)."""
    complete(cfg)
    for ok, message in _range_checks(cfg):
        if not ok:
            raise DmireidError(f"invalid config: {message}")
    check_eps(cfg.pseudo_labels.eps)
    _check_device(cfg.device)


def _plugin(cfg: Config, kind: str):
    """(name, its registry's lookup, its options check, options) of one plug-in kind of ``cfg``."""
    if kind == "objective":
        return cfg.method, OBJECTIVES.lookup, check_objective_options, cfg.objective_options
    if kind == "labeler":
        p = cfg.pseudo_labels
        return p.labeler, LABELERS.lookup, check_labeler_options, p.options
    if kind == "backbone":
        return cfg.model.arch, BACKBONES.lookup, check_backbone_options, cfg.model.options
    return cfg.data.name, find_dataset, check_dataset_options, cfg.data.options


def plugin_registered(cfg: Config, kind: str) -> bool:
    """Whether the name ``cfg`` gives plug-in ``kind`` is registered now."""
    name, lookup, _, _ = _plugin(cfg, kind)
    try:
        lookup(name)
    except DmireidError:
        return False
    return True


def with_plugin_hint(cfg: Config, exc: DmireidError) -> DmireidError:
    """``exc`` (an unknown plug-in name), naming the run's ``plugins`` to import when it has any."""
    if not cfg.plugins:
        return exc
    return DmireidError(f"{exc} — the run named plug-in(s) {', '.join(cfg.plugins)}: import them "
                        f"first (--plugins {' '.join(cfg.plugins)})")


def check_plugins(cfg: Config, kinds: tuple[str, ...] = PLUGIN_KINDS, strict: bool = False) -> None:
    """Each kind's name is registered and its options fit the factory's signature (one line each).

    ``strict=False`` (reading a config): a name no registry knows is an error only when ``plugins``
    is empty; otherwise it may come from a plug-in, and ``train`` checks it after importing them.
    ``strict=True`` (building the object): an unknown name is an error that names the plug-ins to
    import (``--plugins`` for the model-use commands).
    """
    for kind in kinds:
        name, lookup, check, options = _plugin(cfg, kind)
        try:
            lookup(name)
        except DmireidError as exc:
            if not strict and cfg.plugins:
                continue
            raise with_plugin_hint(cfg, exc) from None
        check(name, options)


def flatten(values: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (free mappings such as ``data.options`` stay values)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and not key.endswith("options"):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resumable(saved: Config, cfg: Config, path: Path) -> None:
    """Raise a one-line error when ``cfg`` differs from ``saved`` (the config of checkpoint ``path``,
    read with :func:`~dmireid.config.config_from_dict`) beyond RESUMABLE_KEYS."""
    old, new = flatten(saved.to_dict()), flatten(cfg.to_dict())
    diffs = [k for k in new if k not in RESUMABLE_KEYS and old.get(k) != new[k]]
    if diffs:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diffs[:3])
        raise DmireidError(f"cannot resume from {path}: its config differs ({shown}); "
                           f"use another output_dir or the same settings")
