"""What a :class:`~dmireid.engine.Trainer` runs on: built objects and plain values, no config.

:func:`dmireid.build.training` makes a :class:`TrainingParts` from a config; tests, benchmarks and
users may make one by hand or swap a part (``dataclasses.replace(parts, labeler=mine)``). The
small settings classes below build what must be made anew during a run (the sampler every epoch,
the optimiser and θ' at the start of stage 2) from the values they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from ..data import ClusterBatchSampler, ReIDDataset, Sample, load_dataset
from ..embedding.extract import extract_features
from ..errors import DmireidError
from ..memory import MomentumEncoder
from ..models import ReIDModel
from ..objectives import Objective, ObjectiveContext, build_objective
from ..pseudo_labels import Labeler


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
    camera_options: tuple[str, ...] = ()  # the camera-aware options that are on (need two or more cameras)

    def stage(self, epoch: int) -> int:
        """1 during the first stage of a two_stage schedule, else 2."""
        return 1 if self.schedule == "two_stage" and epoch < self.stage1_epochs else 2


@dataclass(frozen=True)
class DatasetSource:
    """How the training set is loaded (the trainer loads it: rank 0 first under torchrun)."""

    name: str
    root: str | None = None
    options: dict = field(default_factory=dict)
    min_train_images: int = 0  # pseudo_labels.min_samples: fewer images can never form a cluster

    def load(self) -> ReIDDataset:
        loaded = load_dataset(self.name, self.root, **self.options)
        if len(loaded.train) < self.min_train_images:
            raise DmireidError(f"dataset {self.name} at {loaded.root}: {len(loaded.train)} training images, "
                               f"fewer than pseudo_labels.min_samples={self.min_train_images}")
        return loaded


@dataclass(frozen=True)
class Extraction:
    """How features are extracted (pseudo-labels, evaluation): test transform size, batches, AMP."""

    height: int
    width: int
    batch_size: int
    num_workers: int
    amp: bool  # autocast with the run's dtype (on CUDA only)

    def extract(self, model: torch.nn.Module, samples: Sequence[Sample], device: torch.device, *,
                amp: torch.dtype | None, channels_last: bool, progress: bool,
                description: str) -> tuple[torch.Tensor, np.ndarray]:
        """(N×d CPU unit rows, N readable mask) of ``samples`` with ``model`` (all ranks)."""
        return extract_features(model, samples, self.height, self.width, self.batch_size, device, self.num_workers,
                                amp=amp, channels_last=channels_last, progress=progress, description=description)


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective class with its typed settings and its options."""

    objective: type[Objective]
    settings: Any = None  # an instance of ``objective.settings_class`` (None: the class has none)
    options: dict = field(default_factory=dict)  # objective_options: keywords of ``objective.build``

    def uses_momentum_encoder(self, stage: int) -> bool:
        return self.objective.uses_momentum_encoder(self.settings, self.options, stage)

    def describe(self, stage: int) -> str:
        return self.objective.describe(self.settings, self.options, stage)

    def build(self, context: ObjectiveContext) -> Objective:
        """This epoch's objective."""
        return build_objective(self.objective, context, self.settings, self.options)


@dataclass(frozen=True)
class OptimizerSettings:
    """Adam + StepLR (``train.lr/weight_decay/step_size/gamma``)."""

    lr: float
    weight_decay: float
    step_size: int
    gamma: float

    def build(self, params: Iterable[torch.nn.Parameter]):
        """``(Adam, StepLR)`` over the trainable ``params``."""
        adam = torch.optim.Adam([p for p in params if p.requires_grad], lr=self.lr, weight_decay=self.weight_decay)
        return adam, torch.optim.lr_scheduler.StepLR(adam, step_size=self.step_size, gamma=self.gamma)


@dataclass(frozen=True)
class MomentumSettings:
    """θ': EMA of the online model (``memory.ema_momentum``; BN buffers too with ``memory.ema_buffers``)."""

    alpha: float
    buffers: bool

    def build(self, source: torch.nn.Module) -> MomentumEncoder:
        return MomentumEncoder(source, alpha=self.alpha, buffers=self.buffers)


@dataclass(frozen=True)
class SamplerSettings:
    """The P×K sampler of every epoch (``data.num_instances/camera_*``, ``train.batch_size/iters/seed``)."""

    num_instances: int
    batch_size: int
    iters: int
    seed: int
    camera_aware: bool
    camera_rule: str

    def build(self, labels: np.ndarray, cameras: np.ndarray, epoch: int, rank: int = 0,
              world_size: int = 1) -> ClusterBatchSampler:
        return ClusterBatchSampler(labels, cameras, num_instances=self.num_instances, batch_size=self.batch_size,
                                   iters=self.iters, seed=self.seed, epoch=epoch, camera_aware=self.camera_aware,
                                   camera_rule=self.camera_rule, rank=rank, world_size=world_size)


@dataclass(frozen=True)
class TrainingParts:
    """Everything a training run needs, as objects and values (see :func:`dmireid.build.training`)."""

    loop: LoopSettings
    dataset: ReIDDataset | DatasetSource  # the training set, or how to load it
    model: ReIDModel  # the initial weights (θ)
    labeler: Labeler
    objective: ObjectiveSpec
    extraction: Extraction
    optimizer: OptimizerSettings
    momentum: MomentumSettings
    sampler: SamplerSettings
    train_transform: Callable[[Any], torch.Tensor]  # PIL image -> 3×H×W (augmented)
    config: dict = field(default_factory=dict)  # stored in every checkpoint and in config.yaml
    description: str = ""  # the run's choices, logged at the start
    resume_check: Callable[[dict, Path], None] | None = None  # (a checkpoint's config dict, its path): may it resume?

    def load_dataset(self) -> ReIDDataset:
        return self.dataset if isinstance(self.dataset, ReIDDataset) else self.dataset.load()
