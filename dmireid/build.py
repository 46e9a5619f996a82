"""The composition root: the one module that reads a :class:`~dmireid.config.Config` and turns it
into objects. Open it to see how a run is assembled:

    config (dmireid.config)  →  build (this module)  →  objects  →  Trainer(parts) (dmireid.engine)

Every package below takes explicit arguments and never sees a config; the keyword defaults of its
components equal the config's defaults (``tests/test_build.py`` compares each with its field).

    from dmireid import build
    from dmireid.config import load_config
    cfg = load_config("smoke")
    dataset = build.dataset(cfg)                        # data.name / root / options
    model = build.model(cfg)                            # training's model (model.*, data.height/width)
    model = build.model(cfg, for_inference=True)        # evaluation / inference: no weight file, plain BN
    labeler = build.labeler(cfg, device)                # pseudo_labels.*
    optimizer, scheduler = build.optimizer(cfg).build(model.parameters())
    parts = build.training(cfg)                         # TrainingParts: all that the Trainer runs on

Plug-ins: their names and options are checked once, when the config is read
(:func:`~dmireid.config.load_config`); a name that only a plug-in registers is checked by
:func:`import_plugins` (``train``, on every rank) right after importing ``plugins``. The functions
below look names up only (an unknown one is a one-line error naming the config key).
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from . import registry
from .config import Config, config_from_dict
from .config_validation import (PLUGIN_KINDS, check_plugins, check_pretrained_file, check_resumable, plugin_registered,
                                with_plugin_hint)
from .data import ReIDDataset, build_train_transform, load_dataset
from .devices import training_device
from .engine.parts import (DatasetSource, Extraction, LoopSettings, MomentumSettings, ObjectiveSpec,
                           OptimizerSettings, SamplerSettings, TrainingParts)
from .errors import DmireidError
from .models import BACKBONES, ReIDModel, build_model, normalise_pretrained, takes_option
from .objectives import get_objective
from .pseudo_labels import Labeler, construct_labeler
from .pseudo_labels.tracklets import TrackletLabeler
from .seeding import seed_everything

log = logging.getLogger("dmireid.train")


# ----------------------------------------------------------------------------------- plug-ins
def import_plugins(cfg: Config) -> None:
    """Import ``plugins`` (modules or ``.py`` files), then check the plug-in names (and options)
    that only they register: every name registered before was checked when the config was read."""
    unchecked = tuple(kind for kind in PLUGIN_KINDS if not plugin_registered(cfg, kind))
    registry.import_plugins(cfg.plugins)
    check_plugins(cfg, unchecked, strict=True)


# ----------------------------------------------------------------------------------- data
def dataset(cfg: Config, name: str | None = None, root: str | Path | None = None) -> ReIDDataset:
    """The dataset of ``data`` (name, root, options); ``name`` another dataset (its options are then
    none), ``root`` another folder."""
    data = cfg.data
    root = data.root if root is None else root
    if name is not None and name != data.name:
        return load_dataset(name, root)
    return load_dataset(data.name, root, **data.options)


def dataset_source(cfg: Config) -> DatasetSource:
    """How the training set is loaded (``data.name/root/options``; at least ``pseudo_labels.min_samples`` images)."""
    d = cfg.data
    return DatasetSource(d.name, d.root, dict(d.options), cfg.pseudo_labels.min_samples)


def input_size(cfg: Config) -> tuple[int, int]:
    """(height, width) of the images the model sees (``data.height``, ``data.width``)."""
    return cfg.data.height, cfg.data.width


def train_transform(cfg: Config):
    """The training augmentation (``data.height/width/erasing``)."""
    return build_train_transform(cfg.data.height, cfg.data.width, erasing=cfg.data.erasing)


def sampler(cfg: Config) -> SamplerSettings:
    """The P×K sampler's settings (``data.num_instances/camera_*``, ``train.*``); ``.build(...)`` per epoch."""
    d, t = cfg.data, cfg.train
    return SamplerSettings(d.num_instances, t.batch_size, t.iters, t.seed, d.camera_aware, d.camera_rule)


def extraction(cfg: Config) -> Extraction:
    """``data.height/width/num_workers``, ``train.extract_batch_size/amp_extract``."""
    return Extraction(cfg.data.height, cfg.data.width, cfg.train.extract_batch_size, cfg.data.num_workers,
                      cfg.train.amp_extract)


# ----------------------------------------------------------------------------------- model
def model(cfg: Config, *, for_inference: bool = False) -> ReIDModel:
    """The one model builder (training, evaluation, inference) from ``model.*`` at ``data``'s size.

    A backbone factory that takes ``img_size`` (a ViT's position grid) gets (height, width) unless
    ``model.options`` sets it. ``for_inference``: the weights come from a checkpoint (no
    ``model.pretrained`` file or download) and BatchNorm is plain (eval mode uses running statistics).
    """
    m = cfg.model
    try:
        BACKBONES.lookup(m.arch)  # a checkpoint's backbone may be a plug-in's: name the ones to import
    except DmireidError as exc:
        raise with_plugin_hint(cfg, exc) from None
    options = dict(m.options)
    if "img_size" not in options and takes_option(m.arch, "img_size"):
        options["img_size"] = list(input_size(cfg))
    return build_model(m.arch, pretrained=None if for_inference else m.pretrained, pooling=m.pooling,
                       gem_p=m.gem_p, last_stride=m.last_stride, bn_group_size=0 if for_inference else m.bn_group_size,
                       **options)


def initial_model(cfg: Config) -> ReIDModel:
    """The weights training with ``cfg`` starts from: global RNGs seeded with ``train.seed``, then built.

    ``dmireid evaluate --random-init`` uses it too, so "untrained vs trained" compares one model.
    """
    seed_everything(cfg.train.seed)
    return model(cfg)


def momentum_encoder(cfg: Config) -> MomentumSettings:
    """θ''s settings (``memory.ema_momentum/ema_buffers``); ``.build(source)`` makes the EMA copy."""
    return MomentumSettings(cfg.memory.ema_momentum, cfg.memory.ema_buffers)


def optimizer(cfg: Config) -> OptimizerSettings:
    """Adam + StepLR settings (``train.lr/weight_decay/step_size/gamma``); ``.build(params)``."""
    t = cfg.train
    return OptimizerSettings(t.lr, t.weight_decay, t.step_size, t.gamma)


# ----------------------------------------------------------------------------------- method
def labeler(cfg: Config, device: torch.device | str | None = None, progress: bool = True) -> Labeler:
    """The registered labeler ``pseudo_labels.labeler`` with the ``pseudo_labels`` settings it takes."""
    p = cfg.pseudo_labels
    min_samples = p.tracklet_min_samples if p.tracklets and p.tracklet_level == "tracklet" else p.min_samples
    labeler = construct_labeler(p.labeler, p.options, k1=p.k1, k2=p.k2, eps=p.eps, min_samples=min_samples,
                                knn_backend=p.knn_backend, camera_balance=p.camera_balance, k1_intra=p.k1_intra,
                                k1_inter=p.k1_inter, k2_intra=p.k2_intra, k2_inter=p.k2_inter, progress=progress,
                                device=device)
    if not p.tracklets:
        return labeler
    return TrackletLabeler(labeler, level=p.tracklet_level, noise=p.tracklet_noise,
                           association=p.tracklet_association, link_similarity=p.tracklet_link_similarity)


def objective_settings(settings_class: type | None, section: Any) -> Any:
    """An instance of ``settings_class`` (a dataclass) whose fields are read from the same-named keys
    of the config section ``section`` (``memory``; lists become tuples); None without a class."""
    if settings_class is None:
        return None
    values = {}
    for f in fields(settings_class):
        if hasattr(section, f.name):
            value = getattr(section, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return settings_class(**values)


def objective(cfg: Config) -> ObjectiveSpec:
    """``method`` (its class), its settings from the ``memory`` section, ``objective_options``."""
    cls = get_objective(cfg.method)
    return ObjectiveSpec(cls, objective_settings(cls.settings_class, cfg.memory), dict(cfg.objective_options))


# ----------------------------------------------------------------------------------- the loop
def camera_options(cfg: Config) -> tuple[str, ...]:
    """The camera-aware options that are on (each needs training images from two or more cameras)."""
    return tuple(key for on, key in ((cfg.memory.camera_proxies, "memory.camera_proxies"),
                                     (cfg.pseudo_labels.camera_balance, "pseudo_labels.camera_balance")) if on)


def loop(cfg: Config) -> LoopSettings:
    t = cfg.train
    return LoopSettings(
        run_dir=Path(cfg.output_dir), device=cfg.device, epochs=t.epochs, iters=t.iters, batch_size=t.batch_size,
        clusters_per_batch=t.batch_size // cfg.data.num_instances, seed=t.seed, eval_every=t.eval_every,
        schedule=t.schedule, stage1_epochs=t.stage1_epochs, stage2_init=t.stage2_init,
        max_empty_epochs=t.max_empty_epochs, deterministic=t.deterministic, amp=t.amp, amp_dtype=t.amp_dtype,
        channels_last=cfg.model.channels_last, num_workers=cfg.data.num_workers,
        save_pseudo_labels=t.save_pseudo_labels, corrupt_images=cfg.data.corrupt_images,
        momentum_forward=cfg.memory.ema_forward, camera_options=camera_options(cfg))


def check_training(cfg: Config) -> None:
    """Before anything is built: the weight file exists; warnings for settings that silently hurt."""
    check_pretrained_file(cfg.model.pretrained)
    warn_without_pretrained(cfg)
    warn_frozen_momentum_statistics(cfg)


def warn_without_pretrained(cfg: Config) -> None:
    """A real dataset trained from random weights: say that the published numbers assume ImageNet's."""
    if cfg.data.name != "synthetic" and normalise_pretrained(cfg.model.pretrained) is None:
        log.warning("model.pretrained is none: training %s from random weights; the published numbers assume "
                    "ImageNet weights (model.pretrained=imagenet or a weight file)", cfg.data.name)


def warn_frozen_momentum_statistics(cfg: Config) -> None:
    """θ' with neither buffer EMA nor train-mode forwards keeps its BN statistics of the stage-2 start."""
    if not cfg.memory.ema_buffers and cfg.memory.ema_forward == "eval":
        log.warning("memory.ema_buffers=false with memory.ema_forward=eval: the momentum encoder's BN running "
                    "statistics never change (set ema_forward=train or ema_buffers=true)")


def describe(cfg: Config) -> str:
    """One log line of the run's choices (schedule, model, labeler, sampler, erasing, θ')."""
    t, p, m = cfg.train, cfg.pseudo_labels, cfg.memory
    schedule = (f"two_stage ({t.stage1_epochs} epochs stage 1, stage 2 from the "
                f"{'best stage-1 checkpoint on the TEST set' if t.stage2_init == 'best' else 'last stage-1 weights'})"
                if t.schedule == "two_stage" else "single")
    return (f"schedule {schedule}, {t.epochs} epochs x {t.iters} iterations of {t.batch_size} images, model "
            f"{cfg.model.arch} (pretrained {cfg.model.pretrained or 'none: random init'}), bn_group_size "
            f"{cfg.model.bn_group_size}, train.amp_dtype {t.amp_dtype} (extraction amp {t.amp_extract}), labeler "
            f"{p.labeler}, pseudo-labels eps {p.eps:.2f} k1 {p.k1} k2 {p.k2}, sampler camera_rule "
            f"{cfg.data.camera_rule}, erasing {cfg.data.erasing}, momentum encoder (when used) EMA "
            f"{m.ema_momentum} forward in {m.ema_forward} mode, EMA of BN buffers {m.ema_buffers}")


class ResumeCheck:
    """May a run of config ``current`` (a ``Config.to_dict()``) resume from a checkpoint whose config
    dict is ``saved``? One line naming the differing keys otherwise."""

    def __init__(self, current: dict):
        self.current = current

    def __call__(self, saved: dict, path: Path) -> None:
        check_resumable(config_from_dict(saved), config_from_dict(self.current), path)


def training(cfg: Config, progress: bool = True) -> TrainingParts:
    """Every object and setting a training run needs, from ``cfg`` (plug-ins must be imported).

    Builds the initial model (seeded with ``train.seed``) and the labeler (on the run's device);
    the dataset is loaded by the trainer (rank 0 first under torchrun).
    """
    check_training(cfg)
    return TrainingParts(
        loop=loop(cfg), dataset=dataset_source(cfg), model=initial_model(cfg),
        labeler=labeler(cfg, training_device(cfg.device), progress), objective=objective(cfg),
        extraction=extraction(cfg), optimizer=optimizer(cfg), momentum=momentum_encoder(cfg), sampler=sampler(cfg),
        train_transform=train_transform(cfg), config=cfg.to_dict(), description=describe(cfg),
        resume_check=ResumeCheck(cfg.to_dict()))
