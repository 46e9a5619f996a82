"""The epoch loop of spec §1: extract → pseudo-label → build the objective → iterate → hooks.

    from dmireid.config import load_config
    from dmireid.engine import train
    results = train(load_config("smoke", ["output_dir=runs/x"]))

The trainer reads no config: :func:`dmireid.build.training` turns one into the objects and values
it runs on (:class:`~dmireid.engine.parts.TrainingParts`: the initial model, the labeler, the
objective with its settings, the data source, the optimiser and sampler settings);
``Trainer(parts)`` takes them, ``Trainer.from_config(cfg)`` is the one-line convenience. It holds the loop, the optimisation step and the
state that crosses layers, one owner each: ``best`` (updated where the evaluation runs), the
stage-2 start weights and the epoch's labels. Checkpoints are written at epoch ends, where the
objective is rebuilt from the model anyway (cluster ids change every epoch), so a checkpoint needs
no memory state. Per epoch every global RNG is re-seeded from ``(train.seed, epoch)`` and the
sampler, data-loader workers and the objective draw from generators seeded the same way, so a run
resumed from an epoch-end checkpoint repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed as dist
from ..data import ImageDataset
from ..embedding import weights_fingerprint
from ..errors import DmireidError
from ..objectives import ObjectiveContext
from ..pseudo_labels import call_labeler, camera_spread, label_quality
from ..run_files import CONFIG, LAST_CHECKPOINT, write_run_config
from ..seeding import epoch_seed, seed_everything
from .hooks import (CheckpointHook, EvaluationHook, Hook, MetricsHook, OpenSetHook, ProgressHook,
                    PseudoLabelsHook)
from .loader import train_loader
from .parts import TrainingParts
from .session import TrainingSession
from .step import Batch, TrainStep

log = logging.getLogger("dmireid.train")


class Trainer(TrainingSession):
    """The epoch loop (set-up lives in :class:`TrainingSession`, one step in :class:`TrainStep`).

    ``hooks`` are added after the default ones (progress, pseudo-label files, evaluation, metrics,
    checkpoints, open set); ``default_hooks=False``: ``hooks`` only. Every hook's ``after_epoch``
    runs before any ``write_epoch``, so what a hook puts in ``storage`` is in ``metrics.jsonl`` and
    the checkpoint whatever the order of the list.
    """

    log_every = 20

    def __init__(self, parts: TrainingParts, hooks: list[Hook] | None = None, progress: bool = True, *,
                 default_hooks: bool = True):
        super().__init__(parts, progress)
        self.labeler = parts.labeler
        self.objective = None  # this epoch's objective (memories + loss)
        self.step = TrainStep()  # called as self.step(self, batch): replace or wrap it freely
        self.hooks = (self.default_hooks() if default_hooks else []) + list(hooks or [])

    @classmethod
    def from_config(cls, cfg, hooks: list[Hook] | None = None, progress: bool = True, *,
                    default_hooks: bool = True) -> "Trainer":
        """``Trainer(build.training(cfg), ...)`` after importing the config's plug-ins (every rank)."""
        from .. import build  # the composition root sits above the engine: imported here only

        build.import_plugins(cfg)
        return cls(build.training(cfg, progress), hooks=hooks, progress=progress, default_hooks=default_hooks)

    @property
    def record(self) -> dict[str, Any]:
        """Deprecated: this epoch's results; read ``storage.latest``, write ``storage.put(...)``."""
        from ..deprecation import warn_moved

        warn_moved("Trainer.record", "Trainer.storage (latest / put)")
        return self.storage.current

    def default_hooks(self) -> list[Hook]:
        s = self.loop
        hooks: list[Hook] = [ProgressHook(s.iters, s.epochs, s.batch_size, self.progress, self.log_every)]
        if s.save_pseudo_labels:
            hooks.append(PseudoLabelsHook(self.run_dir))
        return hooks + [EvaluationHook(self.evaluate_encoders, s.eval_every, s.epochs), MetricsHook(self.run_dir),
                        CheckpointHook(self.run_dir, self.checkpoint_payload),
                        OpenSetHook(self.run_dir, self.final_training_features)]

    # ----------------------------------------------------------------------------- set-up and resume
    def setup(self, resume_from: Path | None = None) -> None:
        self.prepare()
        if self.uses_momentum_encoder(0):
            self.ema = self.momentum_encoder()
        checkpoint = resume_from or (self.run_dir / LAST_CHECKPOINT)
        if dist.main_decides(checkpoint.exists(), self.device):  # rank 0 decides; every rank needs the file
            if not checkpoint.exists():
                raise DmireidError(f"rank {self.rank}: {checkpoint} is missing on this node but rank 0 resumes "
                                   f"from it: copy it to every node or use a shared output_dir")
            self.resume(checkpoint)
        elif dist.is_main():
            write_run_config(self.parts.config, self.run_dir / CONFIG)
        self.log_choices()

    # ----------------------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        self.call_hooks("before_train")
        while self.epoch < self.loop.epochs:
            self.run_epoch()
            self.epoch += 1
        self.call_hooks("after_train")
        return self.results()

    def call_hooks(self, moment: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, moment)(self, *args)

    def run_epoch(self) -> None:
        epoch = self.epoch
        seed_everything(epoch_seed(self.loop.seed, epoch))
        if self.loop.schedule == "two_stage" and epoch == self.loop.stage1_epochs and self.ema is None:
            self.start_stage_two()
        self.storage.begin_epoch(epoch, lr=self.optimizer.param_groups[0]["lr"])
        self.call_hooks("before_epoch")
        start = time.time()
        features, ok = self.extract(self.unwrapped, self.dataset.train, f"extract train (epoch {epoch + 1})")
        labels = self.pseudo_labels(features, ok)
        self.storage.put(time_pseudo_labels=time.time() - start)
        self.call_hooks("after_pseudo_labels", labels)
        num_clusters = int(labels.max()) + 1 if labels.size else 0
        if num_clusters < 2:
            self.skip_epoch(num_clusters)
        else:
            self.empty_epochs = 0
            self.objective = self.parts.objective.build(self.objective_context(features, labels))
            self.train_iterations(labels)
        self.scheduler.step()
        self.call_hooks("after_epoch")  # producers: evaluation, the user's hooks
        self.update_best(self.storage.latest)
        self.call_hooks("write_epoch")  # writers: metrics.jsonl, checkpoints
        self.storage.end_epoch()

    def skip_epoch(self, num_clusters: int) -> None:
        self.empty_epochs += 1
        self.storage.put(loss=0.0, skipped=True)
        message = f"epoch {self.epoch + 1}: {self.labeler!r} found {num_clusters} cluster(s); training skipped this epoch"
        if self.empty_epochs >= self.loop.max_empty_epochs:
            raise DmireidError(f"{message}; stopping after {self.empty_epochs} such epochs "
                               f"(train.max_empty_epochs={self.loop.max_empty_epochs}): try other pseudo_labels "
                               f"settings")
        log.warning(message)

    def start_stage_two(self) -> None:
        """two_stage: best (or last) stage-1 weights, fresh optimiser and scheduler, momentum encoder."""
        if dist.main_decides(self.stage2_start is not None, self.device):  # rank 0 evaluated; it shares θ
            if dist.is_main():
                self.unwrapped.load_state_dict(self.stage2_start)
            for tensor in self.unwrapped.state_dict().values():
                dist.broadcast(tensor)
            log.info("stage 2: starting from the best stage-1 weights (epoch %d, chosen on the test set: "
                     "train.stage2_init=best)", self.best["epoch"] + 1)
        else:
            log.info("stage 2: starting from the last stage-1 weights%s", "" if self.loop.stage2_init == "last"
                     else " (no stage-1 epoch was evaluated)")
        self.stage2_start = None
        self.optimizer, self.scheduler = self.parts.optimizer.build(self.model.parameters())
        if self.uses_momentum_encoder(self.epoch):
            self.ema = self.momentum_encoder()

    # ----------------------------------------------------------------------------- pseudo labels
    def pseudo_labels(self, features: torch.Tensor, ok: np.ndarray) -> np.ndarray:
        """The labeler on readable images; unreadable → -1. A collective labeler runs on every rank
        and shares its labels itself; any other runs on rank 0 and its labels are broadcast here."""
        n_bad = int((~ok).sum())
        if n_bad:
            first = self.dataset.train[int(np.flatnonzero(~ok)[0])][0]
            if self.loop.corrupt_images == "stop":
                raise DmireidError(f"unreadable training image {first} ({n_bad} in all; "
                                   f"data.corrupt_images=skip leaves them out)")
            log.warning("%d unreadable training image(s) left out this epoch, e.g. %s", n_bad, first)
        labels = np.full(len(ok), -1, dtype=np.int64)
        true, cameras = self.train_identities, self.train_cameras
        collective = getattr(self.labeler, "collective", False)
        if dist.is_main() or collective:
            good = np.flatnonzero(ok)
            tracklets, frames = self.train_tracklets, self.train_frames
            labels[good] = call_labeler(self.labeler, features[good], cameras=cameras[good], identities=true[good],
                                        tracklets=None if tracklets is None else tracklets[good],
                                        frames=None if frames is None else frames[good])
        if not collective:
            labels = dist.broadcast(torch.from_numpy(labels).to(self.device)).cpu().numpy()
        num_clusters = int(labels.max()) + 1 if labels.size else 0
        self.storage.put(num_clusters=num_clusters, num_outliers=int((labels[ok] < 0).sum()), num_unreadable=n_bad)
        if num_clusters >= 1 and (true >= 0).all():
            self.storage.put(**label_quality(labels[ok], true[ok]))
        if num_clusters >= 1:
            self.storage.put(**camera_spread(labels[ok], cameras[ok]))
        self.storage.put(**getattr(self.labeler, "stats", {}))
        return labels

    def objective_context(self, features: torch.Tensor, labels: np.ndarray) -> ObjectiveContext:
        def embed_momentum(rows: np.ndarray) -> torch.Tensor:
            return self.extract(self.ema.module, [self.dataset.train[i] for i in rows], "extract θ' instances")[0]

        return ObjectiveContext(features=features, labels=torch.from_numpy(labels),
                                cameras=torch.from_numpy(self.train_cameras), epoch=self.epoch,
                                stage=self.loop.stage(self.epoch), seed=epoch_seed(self.loop.seed, self.epoch),
                                device=self.device, embed_momentum=embed_momentum if self.ema is not None else None)

    def final_training_features(self) -> tuple[torch.Tensor, np.ndarray, str, str]:
        """The training images embedded by the encoder a user of the checkpoint gets (θ' when the run
        has one, else θ): (N×d features, N readable mask, "momentum" | "online", weights fingerprint)."""
        encoder = self.ema.module if self.ema is not None else self.unwrapped
        features, ok = self.extract(encoder, self.dataset.train, "extract train (open-set threshold)")
        return (features, ok, "momentum" if self.ema is not None else "online",
                weights_fingerprint(encoder.state_dict()))

    # ----------------------------------------------------------------------------- iterations
    def train_iterations(self, labels: np.ndarray) -> None:
        self.model.train()
        if self.ema is not None:
            self.ema.module.train(self.loop.momentum_forward == "train")
        labels_t, cameras_t = torch.from_numpy(labels), torch.from_numpy(self.train_cameras)
        sampler = self.parts.sampler.build(labels, self.train_cameras, self.epoch, self.rank, self.world_size)
        loader = train_loader(sampler, ImageDataset(self.dataset.train, self.parts.train_transform),
                              epoch_seed(self.loop.seed, self.epoch), self.loop.batch_size, self.rank,
                              self.loop.num_workers, pin_memory=self.device.type == "cuda")
        losses, terms_sum, n_images, start = [], {}, 0, None
        for iteration, (images, index, ok) in enumerate(loader):
            if not bool(ok.all()):
                self.handle_unreadable_batch(index[~ok])
            images = images[ok].to(self.device, non_blocking=True)
            if self.use_channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            y = labels_t[index[ok]].to(self.device, non_blocking=True)
            cameras = cameras_t[index[ok]].to(self.device, non_blocking=True) if self.objective.needs_cameras else None
            loss, terms = self.step(self, Batch(images, y, cameras, iteration))
            losses.append(loss.detach())
            for key, value in terms.items():
                terms_sum[key] = terms_sum.get(key, 0.0) + value.detach()
            if start is None:  # images/s from the end of the first step: no worker start-up
                start = time.time()
            else:
                n_images += len(y)
            if (iteration + 1) % self.log_every == 0 or iteration + 1 == self.loop.iters:
                self.last_logged_loss = float(losses[-1])
            self.call_hooks("after_iter", iteration + 1)
        elapsed = time.time() - start if start is not None else 0.0
        self.storage.put(loss=float(torch.stack(losses).mean()))
        self.storage.put(**{k: float(v) / len(losses) for k, v in terms_sum.items()})
        self.storage.put(images_per_s=n_images * self.world_size / max(elapsed, 1e-9))

def train(cfg, resume: str | Path | None = None, progress: bool = True,
          hooks: list[Hook] | None = None, *, default_hooks: bool = True) -> dict[str, Any]:
    """Train with ``cfg`` (a :class:`~dmireid.config.Config`); resumes from ``resume`` (a run folder or checkpoint) or ``output_dir/last.pt``.

    ``hooks`` are added to the default ones (``default_hooks=False``: ``hooks`` only), see :class:`Trainer`.
    Returns ``{"last": metrics of the last epoch, "best_on_test": {...}, "run_dir": str}``.
    """
    resume_path = None
    if resume is not None:
        resume_path = Path(resume)
        if resume_path.is_dir():
            resume_path = resume_path / LAST_CHECKPOINT
        if not resume_path.exists():
            raise DmireidError(f"--resume {resume}: no checkpoint {LAST_CHECKPOINT} there")
    trainer = Trainer.from_config(cfg, hooks=hooks, progress=progress, default_hooks=default_hooks)
    try:
        trainer.setup(resume_from=resume_path)
        return trainer.run()
    finally:
        trainer.release_process_group()
        dist.cleanup()
