"""One optimisation step as an object the loop calls (detectron2's ``run_step``), so tests and
benchmarks time or replace it without patching the trainer:

    trainer.step = Timed(trainer.step)      # Timed.__call__(self, trainer, batch) calls the inner step
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import distributed as dist


@dataclass
class Batch:
    """One training batch on the device."""

    images: torch.Tensor  # B×3×H×W
    labels: torch.Tensor  # B int64 pseudo-labels
    cameras: torch.Tensor | None  # B int64 camera ids; only when the objective needs_cameras
    iteration: int  # 0-based, within the epoch


class TrainStep:
    """Forward θ (and θ' when needed), the objective's loss, backward, optimiser, then the memory and
    EMA updates with every rank's rows. Returns ``(loss, {term: value})`` as device tensors.

    ``trainer`` (a :class:`~dmireid.engine.Trainer`) is read for this epoch's model, θ', objective,
    optimiser, scaler and precision; the step keeps no state of its own."""

    def __call__(self, trainer: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        objective, ema = trainer.objective, trainer.ema
        with trainer.autocast():
            f = trainer.model(batch.images).float()  # B×d, unit rows
        f_momentum = None
        if ema is not None and (objective.needs_momentum_features or trainer.loop.momentum_forward == "train"):
            with torch.no_grad(), trainer.autocast():  # train mode: moves θ''s BN running statistics
                f_momentum = ema.module(batch.images).float()
        with_cameras = {"cameras": batch.cameras} if objective.needs_cameras else {}
        loss, terms = objective.loss(f, batch.labels, **with_cameras)
        trainer.check_finite(loss, batch.iteration)
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        with torch.no_grad():
            dist.average_buffers(trainer.unwrapped)
            f_all, y_all = dist.all_gather_uneven(f.detach()), dist.all_gather_uneven(batch.labels)
            gather_fm = f_momentum is not None and objective.needs_momentum_features
            fm_all = dist.all_gather_uneven(f_momentum) if gather_fm else None
            if with_cameras:
                with_cameras = {"cameras": dist.all_gather_uneven(batch.cameras)}
            objective.update(f_all, fm_all, y_all, **with_cameras)
            if ema is not None:
                if f_momentum is not None and ema.module.training:
                    dist.average_buffers(ema.module)  # θ''s own train-mode BN statistics, as θ's
                ema.update(trainer.unwrapped)
        return loss, terms
