"""The epoch loop of spec §1: extract → pseudo-label → build the objective → iterate → hooks.

    from dmireid.config import load_config
    from dmireid.engine import train
    results = train(load_config("smoke", ["output_dir=runs/x"]))

What is trained is the registered objective ``cfg.method`` (:mod:`dmireid.objectives`), how
pseudo-labels are made is the registered labeler ``cfg.pseudo_labels.labeler``; the trainer holds
the loop and the optimisation step only. Checkpoints are written at epoch ends, where the objective
is rebuilt from the model anyway (cluster ids change every epoch), so a checkpoint needs no memory
state. Per epoch every global RNG is re-seeded from ``(train.seed, epoch)`` and the sampler,
data-loader workers and the objective draw from generators seeded the same way, so a run resumed
from an epoch-end checkpoint repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed as dist
from ..checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from ..config import Config, save_config
from ..errors import DmireidError
from ..memory import MomentumEncoder
from ..objectives import ObjectiveContext, get_objective
from ..pseudo_labels import build_labeler, label_quality
from ..run_files import BEST_CHECKPOINT, CONFIG, LAST_CHECKPOINT
from .hooks import (CheckpointHook, EvaluationHook, Hook, MetricsHook, OpenSetHook, ProgressHook,
                    PseudoLabelsHook)
from .loader import train_loader
from .session import (TrainingSession, build_model_from_config, evaluate_model,  # noqa: F401  (old import paths)
                      resolve_device)
from .state import check_resumable, epoch_seed, seed_everything

log = logging.getLogger("dmireid.train")


class Trainer(TrainingSession):
    """The epoch loop and the optimisation step (set-up lives in :class:`TrainingSession`)."""

    log_every = 20

    def __init__(self, cfg: Config, hooks: list[Hook] | None = None, progress: bool = True):
        super().__init__(cfg, progress)
        self.objective_class, pl = get_objective(cfg.method), cfg.pseudo_labels
        self.labeler = build_labeler(pl.labeler, pl.options, k1=pl.k1, k2=pl.k2, eps=pl.eps, min_samples=pl.min_samples,
                                     knn_backend=pl.knn_backend, progress=progress,
                                     device=self.device)
        self.objective = None  # this epoch's objective (memories + loss)
        self.hooks = hooks if hooks is not None else self.default_hooks()

    def default_hooks(self) -> list[Hook]:
        t = self.cfg.train
        hooks: list[Hook] = [ProgressHook(t.iters, t.epochs, t.batch_size, self.progress, self.log_every)]
        if t.save_pseudo_labels:
            hooks.append(PseudoLabelsHook(self.run_dir))
        return hooks + [EvaluationHook(self.evaluate_encoders, t.eval_every, t.epochs),
                        MetricsHook(self.run_dir), CheckpointHook(self.run_dir, self.checkpoint_payload, self.best),
                        OpenSetHook(self.run_dir)]

    def stage(self, epoch: int) -> int:
        """1 during the first stage of a two_stage schedule, else 2."""
        t = self.cfg.train
        return 1 if t.schedule == "two_stage" and epoch < t.stage1_epochs else 2

    def momentum_encoder(self) -> MomentumEncoder:  # θ': EMA of parameters (and BN buffers if ema_buffers)
        m = self.cfg.memory
        return MomentumEncoder(self.unwrapped, alpha=m.ema_momentum, buffers=m.ema_buffers)

    def uses_momentum_encoder(self, epoch: int) -> bool:
        return self.objective_class.uses_momentum_encoder(self.cfg.memory, self.cfg.objective_options,
                                                          self.stage(epoch))

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
            save_config(self.cfg, self.run_dir / CONFIG)
        self.log_choices(self.objective_class.describe(self.cfg.memory, self.cfg.objective_options,
                                                       self.stage(self.epoch)))

    def resume(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        check_resumable(state["config"], self.cfg, path)
        self.unwrapped.load_state_dict(state["model"])
        if state.get("ema_model") is not None:
            if self.ema is None:
                self.ema = self.momentum_encoder()
            self.ema.module.load_state_dict(state["ema_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.empty_epochs = state["epoch"], state["empty_epochs"]
        self.best.update(state["best"])
        restore_rng_state(state["rng"])
        if dist.is_main():
            save_config(self.cfg, self.run_dir / CONFIG)
            log.info("resumed from %s at epoch %d", path, self.epoch)

    def checkpoint_payload(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch + 1,
            "model": self.unwrapped.state_dict(),
            "ema_model": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": dict(self.best),
            "empty_epochs": self.empty_epochs,
            "metrics": dict(self.record),
            "rng": capture_rng_state(),
        }

    # ----------------------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        self.call_hooks("before_train")
        while self.epoch < self.cfg.train.epochs:
            self.run_epoch()
            self.epoch += 1
        self.call_hooks("after_train")
        return self.results()

    def call_hooks(self, moment: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, moment)(self, *args)

    def run_epoch(self) -> None:
        cfg, epoch = self.cfg, self.epoch
        seed_everything(epoch_seed(cfg.train.seed, epoch))
        if cfg.train.schedule == "two_stage" and epoch == cfg.train.stage1_epochs and self.ema is None:
            self.start_stage_two()
        self.record = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
        self.call_hooks("before_epoch")
        start = time.time()
        features, ok = self.extract(self.unwrapped, self.dataset.train, f"extract train (epoch {epoch + 1})")
        labels = self.pseudo_labels(features, ok)
        self.record["time_pseudo_labels"] = time.time() - start
        self.call_hooks("after_pseudo_labels", labels)
        num_clusters = int(labels.max()) + 1 if labels.size else 0
        if num_clusters < 2:
            self.skip_epoch(num_clusters)
        else:
            self.empty_epochs = 0
            self.objective = self.objective_class.build(self.objective_context(features, labels))
            self.train_iterations(labels)
        self.scheduler.step()
        self.call_hooks("after_epoch")

    def skip_epoch(self, num_clusters: int) -> None:
        self.empty_epochs += 1
        self.record.update(loss=0.0, skipped=True)
        name = self.cfg.pseudo_labels.labeler
        found_by = "DBSCAN" if name == "jaccard_dbscan" else f"labeler {name}"
        message = (f"epoch {self.epoch + 1}: {found_by} found {num_clusters} cluster(s) "
                   f"(pseudo_labels.eps={self.cfg.pseudo_labels.eps}); training skipped this epoch")
        if self.empty_epochs >= self.cfg.train.max_empty_epochs:
            raise DmireidError(f"{message}; stopping after {self.empty_epochs} such epochs "
                               f"(train.max_empty_epochs={self.cfg.train.max_empty_epochs}): try another eps")
        log.warning(message)

    def start_stage_two(self) -> None:
        """two_stage: best (or last) stage-1 weights, fresh optimiser and scheduler, momentum encoder."""
        best = self.run_dir / BEST_CHECKPOINT
        if self.cfg.train.stage2_init == "best" and best.exists():
            self.unwrapped.load_state_dict(load_checkpoint(best, map_location=self.device)["model"])
            log.info("stage 2: starting from the best stage-1 weights %s (chosen on the test set: "
                     "train.stage2_init=best)", best)
        else:
            log.info("stage 2: starting from the last stage-1 weights")
        self.optimizer, self.scheduler = self.make_optimizer()
        if self.uses_momentum_encoder(self.epoch):
            self.ema = self.momentum_encoder()

    # ----------------------------------------------------------------------------- pseudo labels
    def pseudo_labels(self, features: torch.Tensor, ok: np.ndarray) -> np.ndarray:
        """The labeler on readable images (rank 0 unless collective, then broadcast); unreadable → -1."""
        n_bad = int((~ok).sum())
        if n_bad:
            first = self.dataset.train[int(np.flatnonzero(~ok)[0])][0]
            if self.cfg.data.corrupt_images == "stop":
                raise DmireidError(f"unreadable training image {first} ({n_bad} in all; "
                                   f"data.corrupt_images=skip leaves them out)")
            log.warning("%d unreadable training image(s) left out this epoch, e.g. %s", n_bad, first)
        labels = np.full(len(ok), -1, dtype=np.int64)
        if dist.is_main() or getattr(self.labeler, "collective", False):
            good = np.flatnonzero(ok)
            found = self.labeler(features[good])
            if dist.is_main():
                labels[good] = found
        labels = dist.broadcast(torch.from_numpy(labels).to(self.device)).cpu().numpy()
        num_clusters = int(labels.max()) + 1 if labels.size else 0
        self.record.update(num_clusters=num_clusters, num_outliers=int((labels[ok] < 0).sum()), num_unreadable=n_bad)
        true = np.array([pid for _, pid, _ in self.dataset.train])
        if num_clusters >= 1 and (true >= 0).all():
            self.record.update(label_quality(labels[ok], true[ok]))
        return labels

    def objective_context(self, features: torch.Tensor, labels: np.ndarray) -> ObjectiveContext:
        def embed_momentum(rows: np.ndarray) -> torch.Tensor:
            return self.extract(self.ema.module, [self.dataset.train[i] for i in rows], "extract θ' instances")[0]

        return ObjectiveContext(features=features, labels=torch.from_numpy(labels), epoch=self.epoch,
                                stage=self.stage(self.epoch), seed=epoch_seed(self.cfg.train.seed, self.epoch),
                                device=self.device, settings=self.cfg.memory, options=self.cfg.objective_options,
                                embed_momentum=embed_momentum if self.ema is not None else None)

    # ----------------------------------------------------------------------------- iterations
    def train_iterations(self, labels: np.ndarray) -> None:
        self.model.train()
        if self.ema is not None:
            self.ema.module.train(self.cfg.memory.ema_forward == "train")
        labels_t = torch.from_numpy(labels)
        loader = train_loader(self.cfg, self.dataset.train, labels, self.epoch,
                              epoch_seed(self.cfg.train.seed, self.epoch), self.rank, self.world_size,
                              pin_memory=self.device.type == "cuda")
        losses, terms_sum, n_images, start = [], {}, 0, None
        for iteration, (images, index, ok) in enumerate(loader):
            if not bool(ok.all()):
                self.handle_unreadable_batch(index[~ok])
            images = images[ok].to(self.device, non_blocking=True)
            if self.use_channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            y = labels_t[index[ok]].to(self.device, non_blocking=True)
            loss, terms = self.step(images, y, iteration)
            losses.append(loss.detach())
            for key, value in terms.items():
                terms_sum[key] = terms_sum.get(key, 0.0) + value.detach()
            if start is None:  # images/s from the end of the first step: no worker start-up
                start = time.time()
            else:
                n_images += len(y)
            if (iteration + 1) % self.log_every == 0 or iteration + 1 == self.cfg.train.iters:
                self.last_logged_loss = float(losses[-1])
            self.call_hooks("after_iter", iteration + 1)
        elapsed = time.time() - start if start is not None else 0.0
        self.record["loss"] = float(torch.stack(losses).mean())
        self.record.update({k: float(v) / len(losses) for k, v in terms_sum.items()})
        self.record["images_per_s"] = n_images * self.world_size / max(elapsed, 1e-9)

    def step(self, images: torch.Tensor, y: torch.Tensor, iteration: int):
        """One optimisation step; returns (loss, {term: value}) as device tensors."""
        with self.autocast():
            f = self.model(images).float()  # B×d, unit rows
        f_momentum = None
        if self.ema is not None and (self.objective.needs_momentum_features or self.cfg.memory.ema_forward == "train"):
            with torch.no_grad(), self.autocast():  # train mode: moves θ''s BN running statistics
                f_momentum = self.ema.module(images).float()
        loss, terms = self.objective.loss(f, y)
        self.check_finite(loss, iteration)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            dist.average_buffers(self.unwrapped)
            f_all, y_all = dist.all_gather_uneven(f.detach()), dist.all_gather_uneven(y)
            gather_fm = f_momentum is not None and self.objective.needs_momentum_features
            fm_all = dist.all_gather_uneven(f_momentum) if gather_fm else None
            self.objective.update(f_all, fm_all, y_all)
            if self.ema is not None:
                if f_momentum is not None and self.ema.module.training:
                    dist.average_buffers(self.ema.module)  # θ''s own train-mode BN statistics, as θ's
                self.ema.update(self.unwrapped)
        return loss, terms


def train(cfg: Config, resume: str | Path | None = None, progress: bool = True,
          hooks: list[Hook] | None = None) -> dict[str, Any]:
    """Train with ``cfg``; resumes from ``resume`` (a run folder or checkpoint) or ``output_dir/last.pt``.

    Returns ``{"last": metrics of the last epoch, "best_on_test": {...}, "run_dir": str}``.
    """
    resume_path = None
    if resume is not None:
        resume_path = Path(resume)
        if resume_path.is_dir():
            resume_path = resume_path / LAST_CHECKPOINT
        if not resume_path.exists():
            raise DmireidError(f"--resume {resume}: no checkpoint {LAST_CHECKPOINT} there")
    trainer = Trainer(cfg, hooks=hooks, progress=progress)
    try:
        trainer.setup(resume_from=resume_path)
        return trainer.run()
    finally:
        dist.cleanup()
