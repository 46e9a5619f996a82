"""The composition root: the one module that reads a :class:`~dmireid.config.Config` and turns it
into objects. Open it to see how a run is assembled:

    config (dmireid.config)  →  build (this module)  →  objects  →  trainer (dmireid.engine)

Every package below takes explicit arguments and never sees a config; the keyword defaults of its
components equal the config's defaults (``tests/test_build.py`` compares each with its field).

    from dmireid import build
    from dmireid.config import load_config
    cfg = load_config("smoke")
    dataset = build.dataset(cfg)                        # data.name / root / options
    model = build.model(cfg)                            # training's model (model.*, data.height/width)
    model = build.model(cfg, for_inference=True)        # evaluation / inference: no weight file, plain BN
    labeler = build.labeler(cfg, device)                # pseudo_labels.*
    optimizer, scheduler = build.optimizer(cfg, model.parameters())
    parts = build.training(cfg)                         # all that the Trainer runs on

Plug-ins: :func:`import_plugins` (``train``, on every rank) imports ``plugins`` and checks the four
plug-in names and their options; the other functions look up the one name they build, with a
one-line error naming the plug-ins to import when it is missing (a checkpoint's backbone).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from . import registry
from .config import Config, config_from_dict, save_config
from .config_validation import check_cameras, check_plugins, check_pretrained_file, check_resumable
from .data import ClusterBatchSampler, ImageDataset, ReIDDataset, build_train_transform, load_dataset
from .errors import DmireidError
from .memory import MomentumEncoder
from .models import ReIDModel, build_model, normalise_pretrained, takes_option
from .objectives import Objective, get_objective
from .pseudo_labels import Labeler, build_labeler
from .pseudo_labels.tracklets import TrackletLabeler
from .seeding import seed_everything

log = logging.getLogger("dmireid.train")


# ----------------------------------------------------------------------------------- plug-ins
def import_plugins(cfg: Config) -> None:
    """Import ``plugins`` (modules or ``.py`` files), then check every plug-in name and its options."""
    registry.import_plugins(cfg.plugins)
    check_plugins(cfg, strict=True)


# ----------------------------------------------------------------------------------- data
def dataset(cfg: Config, name: str | None = None, root: str | Path | None = None) -> ReIDDataset:
    """The dataset of ``data`` (name, root, options); ``name`` another dataset (its options are then
    none), ``root`` another folder."""
    data = cfg.data
    root = data.root if root is None else root
    if name is not None and name != data.name:
        return load_dataset(name, root)
    check_plugins(cfg, ("dataset",), strict=True)
    return load_dataset(data.name, root, **data.options)


def training_dataset(cfg: Config) -> ReIDDataset:
    """:func:`dataset`, with enough training images for ``pseudo_labels.min_samples``."""
    loaded = dataset(cfg)
    if len(loaded.train) < cfg.pseudo_labels.min_samples:
        raise DmireidError(f"dataset {cfg.data.name} at {loaded.root}: {len(loaded.train)} training images, "
                           f"fewer than pseudo_labels.min_samples={cfg.pseudo_labels.min_samples}")
    return loaded


def input_size(cfg: Config) -> tuple[int, int]:
    """(height, width) of the images the model sees (``data.height``, ``data.width``)."""
    return cfg.data.height, cfg.data.width


def train_images(cfg: Config, samples: list) -> ImageDataset:
    """The training images with the train transform (``data.height/width/erasing``)."""
    return ImageDataset(samples, build_train_transform(cfg.data.height, cfg.data.width, erasing=cfg.data.erasing))


def sampler(cfg: Config, labels, cameras, epoch: int, rank: int = 0, world_size: int = 1) -> ClusterBatchSampler:
    """This epoch's P×K sampler over the pseudo-labels (``data.num_instances/camera_*``, ``train.*``)."""
    d, t = cfg.data, cfg.train
    return ClusterBatchSampler(labels, cameras, num_instances=d.num_instances, batch_size=t.batch_size,
                               iters=t.iters, seed=t.seed, epoch=epoch, camera_aware=d.camera_aware,
                               camera_rule=d.camera_rule, rank=rank, world_size=world_size)


@dataclass(frozen=True)
class Extraction:
    """How features are extracted (pseudo-labels, evaluation): test transform size, batches, AMP."""

    height: int
    width: int
    batch_size: int
    num_workers: int
    amp: bool  # autocast (the run's dtype, on CUDA only)


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
    check_plugins(cfg, ("backbone",), strict=True)
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


def momentum_encoder(cfg: Config, source: torch.nn.Module) -> MomentumEncoder:
    """θ': EMA of ``source`` (``memory.ema_momentum``; BN buffers too with ``memory.ema_buffers``)."""
    return MomentumEncoder(source, alpha=cfg.memory.ema_momentum, buffers=cfg.memory.ema_buffers)


def optimizer(cfg: Config, params: Iterable[torch.nn.Parameter]):
    """``(Adam, StepLR)`` of ``train.lr/weight_decay/step_size/gamma`` over the trainable ``params``."""
    t = cfg.train
    adam = torch.optim.Adam([p for p in params if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay)
    return adam, torch.optim.lr_scheduler.StepLR(adam, step_size=t.step_size, gamma=t.gamma)


# ----------------------------------------------------------------------------------- method
def labeler(cfg: Config, device: torch.device | str | None = None, progress: bool = True) -> Labeler:
    """The registered labeler ``pseudo_labels.labeler`` with the ``pseudo_labels`` settings it takes."""
    p = cfg.pseudo_labels
    check_plugins(cfg, ("labeler",), strict=True)
    min_samples = p.tracklet_min_samples if p.tracklets and p.tracklet_level == "tracklet" else p.min_samples
    labeler = build_labeler(p.labeler, p.options, k1=p.k1, k2=p.k2, eps=p.eps, min_samples=min_samples,
                            knn_backend=p.knn_backend, camera_balance=p.camera_balance, k1_intra=p.k1_intra,
                            k1_inter=p.k1_inter, k2_intra=p.k2_intra, k2_inter=p.k2_inter, progress=progress,
                            device=device)
    if not p.tracklets:
        return labeler
    return TrackletLabeler(labeler, level=p.tracklet_level, noise=p.tracklet_noise,
                           association=p.tracklet_association, link_similarity=p.tracklet_link_similarity)


@dataclass(frozen=True)
class ObjectiveSpec:
    """The registered objective ``method`` with its settings (the ``memory`` section) and options."""

    objective: type[Objective]
    settings: Any
    options: dict

    def uses_momentum_encoder(self, stage: int) -> bool:
        return self.objective.uses_momentum_encoder(self.settings, self.options, stage)

    def describe(self, stage: int) -> str:
        return self.objective.describe(self.settings, self.options, stage)


def objective(cfg: Config) -> ObjectiveSpec:
    """``method`` (its class), the ``memory`` section as its settings, ``objective_options``."""
    check_plugins(cfg, ("objective",), strict=True)
    return ObjectiveSpec(get_objective(cfg.method), cfg.memory, dict(cfg.objective_options))


# ----------------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class LoopSettings:
    """The plain values the epoch loop and its default hooks run with."""

    run_dir: Path  # output_dir
    device: str
    epochs: int
    iters: int
    batch_size: int
    clusters_per_batch: int  # train.batch_size // data.num_instances (split over the ranks)
    seed: int
    eval_every: int
    schedule: str  # single | two_stage
    stage1_epochs: int
    stage2_init: str  # best | last
    max_empty_epochs: int
    deterministic: bool
    amp: bool
    amp_dtype: str
    channels_last: bool
    num_workers: int
    save_pseudo_labels: bool
    corrupt_images: str  # skip | stop
    momentum_forward: str  # memory.ema_forward: train | eval

    def stage(self, epoch: int) -> int:
        """1 during the first stage of a two_stage schedule, else 2."""
        return 1 if self.schedule == "two_stage" and epoch < self.stage1_epochs else 2


def loop(cfg: Config) -> LoopSettings:
    t = cfg.train
    return LoopSettings(
        run_dir=Path(cfg.output_dir), device=cfg.device, epochs=t.epochs, iters=t.iters, batch_size=t.batch_size,
        clusters_per_batch=t.batch_size // cfg.data.num_instances, seed=t.seed, eval_every=t.eval_every,
        schedule=t.schedule, stage1_epochs=t.stage1_epochs, stage2_init=t.stage2_init,
        max_empty_epochs=t.max_empty_epochs, deterministic=t.deterministic, amp=t.amp, amp_dtype=t.amp_dtype,
        channels_last=cfg.model.channels_last, num_workers=cfg.data.num_workers,
        save_pseudo_labels=t.save_pseudo_labels, corrupt_images=cfg.data.corrupt_images,
        momentum_forward=cfg.memory.ema_forward)


def check_training(cfg: Config) -> None:
    """Before the data is made: the weight file exists; warnings for settings that silently hurt."""
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
    """One log line of the run's choices (schedule, model, labeler, sampler, erasing)."""
    t, p = cfg.train, cfg.pseudo_labels
    schedule = (f"two_stage ({t.stage1_epochs} epochs stage 1, stage 2 from the "
                f"{'best stage-1 checkpoint on the TEST set' if t.stage2_init == 'best' else 'last stage-1 weights'})"
                if t.schedule == "two_stage" else "single")
    return (f"schedule {schedule}, {t.epochs} epochs x {t.iters} iterations of {t.batch_size} images, model "
            f"{cfg.model.arch} (pretrained {cfg.model.pretrained or 'none: random init'}), bn_group_size "
            f"{cfg.model.bn_group_size}, train.amp_dtype {t.amp_dtype} (extraction amp {t.amp_extract}), labeler "
            f"{p.labeler}, pseudo-labels eps {p.eps:.2f} k1 {p.k1} k2 {p.k2}, sampler camera_rule "
            f"{cfg.data.camera_rule}, erasing {cfg.data.erasing}")


def resumable(cfg: Config, saved: dict, path: Path) -> None:
    """One line when ``cfg`` may not resume from checkpoint ``path`` whose config dict is ``saved``."""
    check_resumable(config_from_dict(saved), cfg, path)


@dataclass(frozen=True)
class TrainingParts:
    """What the :class:`~dmireid.engine.Trainer` runs on: settings, and builders bound to the config."""

    loop: LoopSettings
    extraction: Extraction
    objective: ObjectiveSpec
    config: dict  # Config.to_dict(), stored in every checkpoint
    description: str  # the run's choices, logged at the start
    check: Callable[[], None]  # check_training
    check_cameras: Callable[[Any], None]  # (the training cameras): the camera options need two or more
    dataset: Callable[[], ReIDDataset]
    model: Callable[[], ReIDModel]  # initial_model: seeded, then built
    labeler: Callable[[torch.device], Labeler]
    optimizer: Callable[[Iterable[torch.nn.Parameter]], tuple]
    momentum_encoder: Callable[[torch.nn.Module], MomentumEncoder]
    sampler: Callable[..., ClusterBatchSampler]  # (labels, cameras, epoch, rank, world_size)
    train_images: Callable[[list], ImageDataset]
    resumable: Callable[[dict, Path], None]  # (checkpoint's config dict, its path)
    save_config: Callable[[Path], None]


def training(cfg: Config, progress: bool = True) -> TrainingParts:
    """Every object and setting a training run needs, from ``cfg`` (plug-ins must be imported)."""
    bind = functools.partial
    return TrainingParts(
        loop=loop(cfg), extraction=extraction(cfg), objective=objective(cfg), config=cfg.to_dict(),
        description=describe(cfg), check=bind(check_training, cfg), check_cameras=bind(check_cameras, cfg),
        dataset=bind(training_dataset, cfg),
        model=bind(initial_model, cfg), labeler=lambda device: labeler(cfg, device, progress),
        optimizer=bind(optimizer, cfg), momentum_encoder=bind(momentum_encoder, cfg), sampler=bind(sampler, cfg),
        train_images=bind(train_images, cfg), resumable=bind(resumable, cfg),
        save_config=bind(save_config, cfg))
