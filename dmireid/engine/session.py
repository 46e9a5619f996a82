"""What a training run sets up before its loop: device, data, model, optimiser, precision.

:class:`TrainingSession` is the base of :class:`~dmireid.engine.trainer.Trainer`; it holds no loop.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed as dist
from .. import models
from ..config import Config
from ..config_validation import check_cameras, check_pretrained_file
from ..data import load_dataset
from ..devices import autocast, autocast_dtype, needs_grad_scaler, resolve_device
from ..errors import DmireidError
from ..inference import evaluate_model, extract_features
from ..run_files import LAST_CHECKPOINT
from .state import seed_everything

log = logging.getLogger("dmireid.train")


def build_model_from_config(cfg: Config) -> torch.nn.Module:
    """The ReIDModel that ``cfg.model`` describes, for ``cfg.data``'s input size (a ViT's position grid)."""
    return models.build_model_from_config(cfg.model, input_size=(cfg.data.height, cfg.data.width))


def initial_model(cfg: Config) -> torch.nn.Module:
    """The weights training with ``cfg`` starts from: global RNGs seeded with ``train.seed``, then built.

    ``dmireid evaluate --random-init`` uses it too, so "untrained vs trained" compares one model.
    """
    seed_everything(cfg.train.seed)
    return build_model_from_config(cfg)


def warn_without_pretrained(cfg: Config) -> None:
    """A real dataset trained from random weights: say that the published numbers assume ImageNet's."""
    if cfg.data.name != "synthetic" and models.normalise_pretrained(cfg.model.pretrained) is None:
        log.warning("model.pretrained is none: training %s from random weights; the published numbers assume "
                    "ImageNet weights (model.pretrained=imagenet or a weight file)", cfg.data.name)


def warn_frozen_momentum_statistics(cfg: Config) -> None:
    """θ' with neither buffer EMA nor train-mode forwards keeps its BN statistics of the stage-2 start."""
    if not cfg.memory.ema_buffers and cfg.memory.ema_forward == "eval":
        log.warning("memory.ema_buffers=false with memory.ema_forward=eval: the momentum encoder's BN running "
                    "statistics never change (set ema_forward=train or ema_buffers=true)")


class TrainingSession:
    """Device, process group, data, model (DDP-wrapped under torchrun), optimiser, scheduler, scaler."""

    def __init__(self, cfg: Config, progress: bool = True):
        self.cfg, self.progress = cfg, progress
        self.run_dir = Path(cfg.output_dir)
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        self.rank, self.world_size = dist.init_distributed(self.device)
        self.amp_dtype = autocast_dtype(self.device, cfg.train.amp, cfg.train.amp_dtype)
        self.ema = None  # MomentumEncoder θ', when the objective uses one
        self.epoch = 0  # epochs finished
        self.best: dict[str, Any] = {"mAP": -1.0, "epoch": -1, "encoder": ""}  # best on test (labelled as such)
        self.empty_epochs = 0  # consecutive epochs without clusters
        self.record: dict[str, Any] = {}  # this epoch's metrics
        self.last_logged_loss: float | None = None

    def prepare(self) -> None:
        """Seed, then data, model, optimiser in that order (the order fixes the initial weights)."""
        cfg = self.cfg
        seed_everything(cfg.train.seed)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if dist.is_main():
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DmireidError(f"output_dir {self.run_dir}: cannot create it ({exc.strerror or exc})") from None
        check_pretrained_file(cfg.model.pretrained)
        warn_without_pretrained(cfg)
        warn_frozen_momentum_statistics(cfg)
        self.dataset = self.load_data()
        self.train_identities = np.array([pid for _, pid, _ in self.dataset.train], dtype=np.int64)  # N, -1 unknown
        self.train_cameras = np.array([cam for _, _, cam in self.dataset.train], dtype=np.int64)  # N, 0..
        if dist.is_main() and not self.train_cameras.any():
            log.info("the training set has one camera (every camera id is 0)")
        check_cameras(cfg, self.train_cameras)
        self.model = initial_model(cfg).to(self.device)
        if self.use_channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.world_size > 1:
            self.check_divisible()
            # BN running stats are averaged over ranks after each step (see dist.average_buffers), not
            # broadcast from rank 0, so N processes × G images equal one process with bn_group_size=G.
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        self.optimizer, self.scheduler = self.make_optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(self.amp_dtype))

    def check_divisible(self) -> None:
        clusters = self.cfg.train.batch_size // self.cfg.data.num_instances
        if clusters % self.world_size:
            raise DmireidError(f"train.batch_size/data.num_instances = {clusters} clusters per batch cannot be split "
                               f"evenly over {self.world_size} processes")

    @property
    def use_channels_last(self) -> bool:
        return self.cfg.model.channels_last and self.device.type == "cuda"

    @property
    def extract_amp(self) -> torch.dtype | None:
        """The autocast dtype of feature extraction (pseudo-labels, evaluation); None = fp32."""
        return self.amp_dtype if self.cfg.train.amp_extract else None

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model

    def autocast(self):
        """Autocast with the run's dtype on CUDA (fp32 elsewhere)."""
        return autocast(self.device, self.amp_dtype)

    def load_data(self):
        data = self.cfg.data
        if dist.is_main():
            dataset = load_dataset(data.name, data.root, **data.options)
        dist.barrier()
        if not dist.is_main():
            dataset = load_dataset(data.name, data.root, **data.options)
        if len(dataset.train) < self.cfg.pseudo_labels.min_samples:
            raise DmireidError(f"dataset {data.name} at {dataset.root}: {len(dataset.train)} training images, "
                               f"fewer than pseudo_labels.min_samples={self.cfg.pseudo_labels.min_samples}")
        return dataset

    def make_optimizer(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.cfg.train.lr, weight_decay=self.cfg.train.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.cfg.train.step_size,
                                                    gamma=self.cfg.train.gamma)
        return optimizer, scheduler

    def extract(self, model: torch.nn.Module, samples, description: str) -> tuple[torch.Tensor, np.ndarray]:
        """Features (N×d CPU unit rows) and readable mask of ``samples`` with ``model`` (all ranks)."""
        cfg = self.cfg
        return extract_features(model, samples, cfg.data.height, cfg.data.width, cfg.train.extract_batch_size,
                                self.device, cfg.data.num_workers, amp=self.extract_amp,
                                channels_last=self.use_channels_last, progress=self.progress, description=description)

    def handle_unreadable_batch(self, bad_index: torch.Tensor) -> None:
        path = self.dataset.train[int(bad_index[0])][0]
        if self.cfg.data.corrupt_images == "stop":
            raise DmireidError(f"unreadable training image {path} (data.corrupt_images=skip leaves such images out)")
        log.warning("skipping %d unreadable image(s) in a batch, e.g. %s", len(bad_index), path)

    def check_finite(self, loss: torch.Tensor, iteration: int) -> None:
        """Stop before a non-finite loss reaches the weights or the memories (one scalar sync)."""
        if not bool(torch.isfinite(loss.detach())):
            raise DmireidError(f"loss became {float(loss.detach())} at epoch {self.epoch + 1} iteration {iteration + 1}; "
                               f"stopped, the last good checkpoint {self.run_dir / LAST_CHECKPOINT} is kept "
                               f"(try a lower train.lr)")

    def evaluate_encoders(self) -> dict[str, float]:
        """mAP / rank-k of θ and (when present) θ' on query+gallery (empty without a query set)."""
        if not self.dataset.query:
            return {}
        out = {}
        encoders = [("", self.unwrapped)] + ([("_ema", self.ema.module)] if self.ema is not None else [])
        for suffix, model in encoders:
            metrics = evaluate_model(model, self.dataset, self.cfg, self.device, progress=self.progress,
                                     amp=self.extract_amp, channels_last=self.use_channels_last)
            if metrics is not None:
                out.update({f"{k}{suffix}": v for k, v in metrics.items()})
        return out

    def results(self) -> dict[str, Any]:
        """Final metrics: the last epoch's record plus the best-on-test epoch (labelled as such)."""
        return {"last": dict(self.record), "best_on_test": dict(self.best), "run_dir": str(self.run_dir)}

    def log_choices(self, objective: str) -> None:
        if not dist.is_main():
            return
        c = self.cfg
        t = c.train
        schedule = (f"two_stage ({t.stage1_epochs} epochs stage 1, stage 2 from the "
                    f"{'best stage-1 checkpoint on the TEST set' if t.stage2_init == 'best' else 'last stage-1 weights'})"
                    if t.schedule == "two_stage" else "single")
        log.info("%s", objective)
        log.info("schedule %s, %d epochs x %d iterations of %d images, model %s (pretrained %s)", schedule,
                 t.epochs, t.iters, t.batch_size, c.model.arch, c.model.pretrained or "none: random init")
        log.info("device %s (world size %d), amp %s (train.amp_dtype=%s; extraction %s), bn_group_size %d, labeler %s, "
                 "pseudo-labels eps %.2f k1 %d k2 %d, sampler camera_rule %s, erasing %s",
                 self.device, self.world_size, self.amp_dtype, t.amp_dtype, self.extract_amp or "fp32",
                 c.model.bn_group_size, c.pseudo_labels.labeler, c.pseudo_labels.eps, c.pseudo_labels.k1,
                 c.pseudo_labels.k2, c.data.camera_rule, c.data.erasing)
