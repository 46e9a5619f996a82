"""Cross-cutting concerns of the epoch loop as hooks: evaluation, metrics, checkpoints, progress.

A hook sees the :class:`~dmireid.engine.trainer.Trainer` and its ``record`` (the current epoch's
metrics dict). Hooks run in list order; the default order is progress → evaluation → metrics →
checkpoint, so a checkpoint always holds the metrics of its own epoch.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from .. import distributed as dist
from ..checkpoint import save_checkpoint

if TYPE_CHECKING:
    from .trainer import Trainer

log = logging.getLogger("dmireid.train")


class Hook:
    """Base class: override the moments you need."""

    def before_train(self, trainer: "Trainer") -> None: ...
    def before_epoch(self, trainer: "Trainer") -> None: ...
    def after_iter(self, trainer: "Trainer", iteration: int) -> None: ...
    def after_epoch(self, trainer: "Trainer") -> None: ...
    def after_train(self, trainer: "Trainer") -> None: ...


class ProgressHook(Hook):
    """A tqdm bar with ETA over the iterations of each epoch (rank 0 only)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def before_epoch(self, trainer):
        if self.enabled and dist.is_main():
            self.bar = tqdm(total=trainer.cfg.train.iters, desc=f"epoch {trainer.epoch + 1}/{trainer.cfg.train.epochs}",
                            unit="it", leave=False)

    def after_iter(self, trainer, iteration):
        if self.bar is not None:
            self.bar.update(1)
            if trainer.last_logged_loss is not None and iteration % trainer.log_every == 0:
                self.bar.set_postfix(loss=f"{trainer.last_logged_loss:.3f}")

    def after_epoch(self, trainer):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EvaluationHook(Hook):
    """Evaluates θ (and θ' when present) every ``every`` epochs and after the last epoch."""

    def __init__(self, every: int):
        self.every = every

    def after_epoch(self, trainer):
        last = trainer.epoch + 1 == trainer.cfg.train.epochs
        if trainer.dataset.query and ((trainer.epoch + 1) % self.every == 0 or last):
            trainer.record.update(trainer.evaluate_encoders())


class MetricsHook(Hook):
    """Appends one JSON line per epoch to ``metrics.jsonl``; TensorBoard scalars when installed."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = None

    def before_train(self, trainer):
        if not dist.is_main():
            return
        truncate_metrics(self.path, trainer.epoch)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.path.parent / "tensorboard"), purge_step=trainer.epoch)
        except ImportError:
            log.info("tensorboard not installed: metrics go to metrics.jsonl only")

    def after_epoch(self, trainer):
        if not dist.is_main():
            return
        record = {k: v for k, v in trainer.record.items() if not (isinstance(v, float) and not math.isfinite(v))}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        log.info(format_record(record))
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()

    def after_train(self, trainer):
        if self.writer is not None:
            self.writer.close()


class CheckpointHook(Hook):
    """Saves ``last.pt`` every epoch and ``best.pt`` when the evaluated mAP improves (rank 0)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def after_epoch(self, trainer):
        improved = trainer.update_best()
        if dist.is_main():
            payload = trainer.checkpoint_payload()
            save_checkpoint(payload, self.run_dir / "last.pt")
            if improved:
                save_checkpoint(payload, self.run_dir / "best.pt")
        dist.barrier()


def truncate_metrics(path: Path, epochs_done: int) -> None:
    """Keep only well-formed lines of epochs ``< epochs_done`` (resume never duplicates a line)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["epoch"] < epochs_done:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def format_record(record: dict) -> str:
    """One log line per epoch: percent for accuracies, 4 digits for losses."""
    parts = [f"epoch {record['epoch'] + 1}"]
    for key, value in record.items():
        if key == "epoch":
            continue
        if key.startswith(("mAP", "rank", "nmi", "ari", "pair_")):
            parts.append(f"{key} {100 * value:.1f}%")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        else:
            parts.append(f"{key} {value}")
    return " | ".join(parts)
