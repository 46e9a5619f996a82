"""Cross-cutting concerns of the epoch loop as hooks that hold their own logic.

A hook's methods receive the trainer, from which the built-in hooks read plain data only
(``epoch``, ``storage`` — the epoch's results, :class:`~dmireid.engine.events.EventStorage` —,
``best`` and ``last_logged_loss``); what they do (evaluate, build a checkpoint payload, embed the
training set) is a function given to their constructor. An epoch ends in two moments:
``after_epoch``, where producers put results (evaluation, the user's hooks), then — after the
trainer updated ``best`` — ``write_epoch``, where writers save them (metrics, checkpoints). So a
checkpoint always holds the metrics of its own epoch and ``best.pt`` follows ``best`` whatever the
order of the hook list; the open-set threshold is added to the final ``last.pt`` after training.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import distributed as dist
from ..embedding.checkpoint import save_checkpoint, store_open_set
from ..errors import DmireidError
from ..evaluation.open_set import estimate_threshold
from ..progress import interactive, progress_bar
from ..run_files import BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS, PSEUDO_LABELS_DIR, TENSORBOARD_DIR

log = logging.getLogger("dmireid.train")


class Hook:
    """Base class: override the moments you need; each receives the trainer
    (:class:`~dmireid.engine.Trainer`)."""

    def before_train(self, trainer) -> None: ...
    def before_epoch(self, trainer) -> None: ...
    def after_pseudo_labels(self, trainer, labels: np.ndarray) -> None: ...
    def after_iter(self, trainer, iteration: int) -> None: ...
    def after_epoch(self, trainer) -> None:
        """Put this epoch's results: ``trainer.storage.put(key=value)``."""

    def write_epoch(self, trainer) -> None:
        """Save the epoch's results (``trainer.storage.latest``): every ``after_epoch`` has run."""

    def after_train(self, trainer) -> None: ...


class ProgressHook(Hook):
    """Iteration progress (rank 0): a tqdm bar on a terminal, else a log line every ``log_every``
    iterations with the loss, images/s and the epoch's ETA."""

    def __init__(self, iters: int, epochs: int, batch_size: int, enabled: bool = True, log_every: int = 20):
        self.iters, self.epochs, self.batch_size = iters, epochs, batch_size
        self.enabled, self.log_every = enabled, log_every
        self.bar, self.start = None, 0.0

    def before_epoch(self, trainer):
        if self.enabled and dist.is_main() and interactive():
            self.bar = progress_bar(total=self.iters, desc=f"epoch {trainer.epoch + 1}/{self.epochs}", unit="it",
                                    leave=False)

    def after_iter(self, trainer, iteration):
        loss = trainer.last_logged_loss
        if self.bar is not None:
            self.bar.update(1)
            if loss is not None and iteration % self.log_every == 0:
                self.bar.set_postfix(loss=f"{loss:.3f}")
        elif self.enabled and dist.is_main():
            if iteration == 1:  # time from the end of the first step: no data-loader start-up
                self.start = time.time()
            elif iteration % self.log_every == 0 or iteration == self.iters:
                per_iter = (time.time() - self.start) / (iteration - 1)
                log.info("epoch %d/%d iteration %d/%d loss %s %.1f img/s eta %s", trainer.epoch + 1, self.epochs,
                         iteration, self.iters, f"{loss:.4f}" if loss is not None else "-",
                         self.batch_size / max(per_iter, 1e-9), format_seconds(per_iter * (self.iters - iteration)))

    def after_epoch(self, trainer):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class PseudoLabelsHook(Hook):
    """Writes each epoch's pseudo-labels to ``pseudo_labels/epoch_NNN.npy`` (rank 0; N int64, -1 = outlier)."""

    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / PSEUDO_LABELS_DIR

    def after_pseudo_labels(self, trainer, labels):
        if dist.is_main():
            self.folder.mkdir(parents=True, exist_ok=True)
            np.save(self.folder / f"epoch_{trainer.epoch:03d}.npy", np.asarray(labels, dtype=np.int64))


class EvaluationHook(Hook):
    """Puts ``evaluate()``'s metrics in the storage every ``every`` epochs and after the last one."""

    def __init__(self, evaluate: Callable[[], dict[str, float]], every: int, epochs: int, enabled: bool = True):
        self.evaluate, self.every, self.epochs, self.enabled = evaluate, every, epochs, enabled

    def after_epoch(self, trainer):
        last = trainer.epoch + 1 == self.epochs
        if self.enabled and ((trainer.epoch + 1) % self.every == 0 or last):
            trainer.storage.put(**self.evaluate())


class MetricsHook(Hook):
    """Appends one JSON line per epoch to ``metrics.jsonl``; TensorBoard scalars when installed."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS
        self.writer = None

    def before_train(self, trainer):
        if not dist.is_main():
            return
        truncate_metrics(self.path, trainer.epoch)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.path.parent / TENSORBOARD_DIR), purge_step=trainer.epoch)
        except ImportError:
            log.info("tensorboard not installed: metrics go to %s only", METRICS)

    def write_epoch(self, trainer):
        if not dist.is_main():
            return
        record = {k: v for k, v in trainer.storage.latest.items() if not (isinstance(v, float) and not math.isfinite(v))}
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
    """Saves ``last.pt`` every epoch and ``best.pt`` when ``trainer.best`` is this epoch's (the
    trainer owns ``best`` and updates it before ``write_epoch``) — rank 0 writes.

    ``payload()`` returns the dict to save.
    """

    def __init__(self, run_dir: Path, payload: Callable[[], dict[str, Any]]):
        self.run_dir, self.payload = Path(run_dir), payload

    def write_epoch(self, trainer):
        if dist.is_main():
            payload = self.payload()
            save_checkpoint(payload, self.run_dir / LAST_CHECKPOINT)
            if trainer.best["epoch"] == trainer.epoch:
                save_checkpoint(payload, self.run_dir / BEST_CHECKPOINT)
        dist.barrier()


class OpenSetHook(Hook):
    """After training: the open-set distance threshold of the final encoder, stored in ``last.pt``.

    Keeps each epoch's pseudo-labels (``after_pseudo_labels``); at ``after_train`` it calls
    ``embed()`` — the training images embedded by the encoder a user of the checkpoint gets:
    (N×d features, N readable mask, encoder name, weights fingerprint), on every rank —, estimates
    the threshold at ``false_match_rate`` from the last epoch's clusters
    (:func:`~dmireid.evaluation.open_set.estimate_threshold`) and rewrites ``last.pt`` atomically with
    an ``open_set`` entry (rank 0). A run resumed after its last epoch has no labels: nothing is done.
    """

    def __init__(self, run_dir: Path, embed: Callable[[], tuple[Any, np.ndarray, str, str]],
                 false_match_rate: float = 0.01):
        self.path, self.embed, self.false_match_rate = Path(run_dir) / LAST_CHECKPOINT, embed, false_match_rate
        self.labels: np.ndarray | None = None
        self.labels_epoch = -1

    def after_pseudo_labels(self, trainer, labels):
        self.labels, self.labels_epoch = np.array(labels, dtype=np.int64), trainer.epoch

    def after_train(self, trainer):
        if self.labels is None:
            return
        features, ok, encoder, fingerprint = self.embed()
        if dist.is_main():
            try:
                estimate = estimate_threshold(features, np.where(ok, self.labels, -1), self.false_match_rate)
            except DmireidError as exc:
                log.warning("open-set threshold not estimated: %s", exc)
            else:
                estimate.update(encoder=encoder, fingerprint=fingerprint,
                                estimated_from=f"training (pseudo-labels of epoch {self.labels_epoch + 1})")
                store_open_set(self.path, estimate)
                log.info("open-set threshold %.4f (cosine distance, %.1f%% false matches between clusters) "
                         "stored in %s", estimate["threshold"], 100 * self.false_match_rate, self.path)
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


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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
