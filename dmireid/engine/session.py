"""What a training run sets up before its loop: device, data, model, optimiser, precision; resuming.

:class:`TrainingSession` is the base of :class:`~dmireid.engine.trainer.Trainer`; it holds no loop
and reads no config: everything comes from :class:`~dmireid.engine.parts.TrainingParts`.
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed as dist
from ..devices import autocast, autocast_dtype, needs_grad_scaler, training_device
from ..embedding import evaluate_model
from ..embedding.checkpoint import (CONFIG_KEY, EMA_MODEL_KEY, MODEL_KEY, capture_rng_state, load_checkpoint,
                                    restore_rng_state, training_checkpoint)
from ..errors import DmireidError
from ..memory import MomentumEncoder
from ..run_files import BEST_CHECKPOINT, CONFIG, LAST_CHECKPOINT, write_run_config
from ..seeding import seed_everything
from .events import EventStorage
from .parts import TrainingParts

log = logging.getLogger("dmireid.train")


class TrainingSession:
    """Device, process group, data, model (DDP-wrapped under torchrun), optimiser, scheduler, scaler."""

    def __init__(self, parts: TrainingParts, progress: bool = True):
        self.parts, self.loop, self.progress = parts, parts.loop, progress
        self.run_dir = self.loop.run_dir
        self.device = training_device(self.loop.device)
        if self.device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            torch.cuda.set_device(self.device)
        self.rank, self.world_size = dist.init_distributed(self.device)
        self.amp_dtype = autocast_dtype(self.device, self.loop.amp, self.loop.amp_dtype)
        self.ema = None  # MomentumEncoder θ', when the objective uses one
        self.epoch = 0  # epochs finished
        self.best: dict[str, Any] = {"mAP": -1.0, "epoch": -1, "encoder": ""}  # best on test (labelled as such)
        self.stage2_start: dict[str, torch.Tensor] | None = None  # θ at the best stage-1 epoch (CPU)
        self.empty_epochs = 0  # consecutive epochs without clusters
        self.storage = EventStorage()  # the epochs' results (metrics.jsonl, checkpoints, hooks read it)
        self.last_logged_loss: float | None = None

    def prepare(self) -> None:
        """Seed, then data, model, optimiser in that order (the order fixes the initial weights)."""
        seed_everything(self.loop.seed)
        if self.loop.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if dist.is_main():
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DmireidError(f"output_dir {self.run_dir}: cannot create it ({exc.strerror or exc})") from None
        self.dataset = self.load_data()
        self.train_identities = np.array([pid for _, pid, _ in self.dataset.train], dtype=np.int64)  # N, -1 unknown
        self.train_cameras = np.array([cam for _, _, cam in self.dataset.train], dtype=np.int64)  # N, 0..
        # N int64 each (-1 unknown), or None when the dataset has none (ReIDDataset.train_tracklets / _frames)
        self.train_tracklets, self.train_frames = (None if values is None else np.asarray(values, dtype=np.int64)
                                                   for values in (self.dataset.train_tracklets,
                                                                  self.dataset.train_frames))
        if dist.is_main() and not self.train_cameras.any():
            log.info("the training set has one camera (every camera id is 0)")
        self.check_cameras()
        self.model = self.parts.model.to(self.device)
        if self.use_channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.world_size > 1:
            self.check_divisible()
            # BN running stats are averaged over ranks after each step (see dist.average_buffers), not
            # broadcast from rank 0, so N processes × G images equal one process with bn_group_size=G.
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        self.optimizer, self.scheduler = self.parts.optimizer.build(self.model.parameters())
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(self.amp_dtype))

    def release_process_group(self) -> None:
        """Drop the DDP wrapper, which holds the process group, so that ``dist.cleanup`` frees it now.

        Left to interpreter shutdown, gloo's worker threads are torn down after Python's: the process
        can abort (SIGABRT, "terminate called without an active exception") after a finished run.
        """
        if isinstance(getattr(self, "model", None), torch.nn.parallel.DistributedDataParallel):
            self.model = self.model.module
            gc.collect()

    def resume(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        if self.parts.resume_check is not None:
            self.parts.resume_check(state[CONFIG_KEY], path)
        self.unwrapped.load_state_dict(state[MODEL_KEY])
        if state.get(EMA_MODEL_KEY) is not None:
            if self.ema is None:
                self.ema = self.momentum_encoder()
            self.ema.module.load_state_dict(state[EMA_MODEL_KEY])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.empty_epochs = state["epoch"], state["empty_epochs"]
        self.best.update(state["best"])
        saved = state.get("stage2_start")
        self.stage2_start = None if saved is None else {k: v.cpu() for k, v in saved.items()}
        best = self.run_dir / BEST_CHECKPOINT  # a 0.1 run in stage 1: its stage-2 start is best.pt's θ
        if "stage2_start" not in state and self.awaits_stage_two() and best.exists():
            self.stage2_start = load_checkpoint(best, map_location="cpu")[MODEL_KEY]
        restore_rng_state(state["rng"])
        if dist.is_main():
            write_run_config(self.parts.config, self.run_dir / CONFIG)
            log.info("resumed from %s at epoch %d", path, self.epoch)

    def checkpoint_payload(self) -> dict[str, Any]:
        return training_checkpoint(
            config=self.parts.config, epoch=self.epoch + 1, model=self.unwrapped.state_dict(),
            ema_model=self.ema.module.state_dict() if self.ema is not None else None,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(), best=dict(self.best),
            stage2_start=self.stage2_start,  # None once stage 2 started
            empty_epochs=self.empty_epochs, metrics=self.storage.latest, rng=capture_rng_state())

    def awaits_stage_two(self) -> bool:
        """A two_stage run with ``stage2_init=best`` whose stage 2 has not begun."""
        s = self.loop
        return s.schedule == "two_stage" and s.stage2_init == "best" and self.epoch <= s.stage1_epochs

    def check_cameras(self) -> None:
        """The camera-aware options need training images from at least two camera ids (checked right
        after the dataset is loaded, before any extraction): one line naming the option."""
        cameras = self.train_cameras
        if not self.loop.camera_options or (len(cameras) and int(cameras.max()) > int(cameras.min())):
            return
        key = self.loop.camera_options[0]
        raise DmireidError(f"{key}=true needs training images from at least two cameras, but every training "
                           f"image of data.name={self.dataset.name} has the same camera id: set {key}=false")

    def check_divisible(self) -> None:
        clusters = self.loop.clusters_per_batch
        if clusters % self.world_size:
            raise DmireidError(f"train.batch_size/data.num_instances = {clusters} clusters per batch cannot be split "
                               f"evenly over {self.world_size} processes")

    @property
    def use_channels_last(self) -> bool:
        return self.loop.channels_last and self.device.type == "cuda"

    @property
    def extract_amp(self) -> torch.dtype | None:
        """The autocast dtype of feature extraction (pseudo-labels, evaluation); None = fp32."""
        return self.amp_dtype if self.parts.extraction.amp else None

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model

    def autocast(self):
        """Autocast with the run's dtype on CUDA (fp32 elsewhere)."""
        return autocast(self.device, self.amp_dtype)

    def load_data(self):
        """Rank 0 first (it may generate the synthetic set), then the others."""
        if dist.is_main():
            dataset = self.parts.load_dataset()
        dist.barrier()
        if not dist.is_main():
            dataset = self.parts.load_dataset()
        return dataset

    def extract(self, model: torch.nn.Module, samples, description: str) -> tuple[torch.Tensor, np.ndarray]:
        """Features (N×d CPU unit rows) and readable mask of ``samples`` with ``model`` (all ranks)."""
        return self.parts.extraction.extract(model, samples, self.device, amp=self.extract_amp,
                                             channels_last=self.use_channels_last, progress=self.progress,
                                             description=description)

    def handle_unreadable_batch(self, bad_index: torch.Tensor) -> None:
        path = self.dataset.train[int(bad_index[0])][0]
        if self.loop.corrupt_images == "stop":
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
        out, ex = {}, self.parts.extraction
        encoders = [("", self.unwrapped)] + ([("_ema", self.ema.module)] if self.ema is not None else [])
        for suffix, model in encoders:
            metrics = evaluate_model(model, self.dataset, ex.height, ex.width, self.device, ex.batch_size,
                                     ex.num_workers, progress=self.progress, amp=self.extract_amp,
                                     channels_last=self.use_channels_last)
            if metrics is not None:
                out.update({f"{k}{suffix}": v for k, v in metrics.items()})
        return out

    def update_best(self, results: dict[str, Any]) -> None:
        """``best`` from this epoch's ``results`` (mAP of θ / θ', when evaluated) and, in stage 1 with
        ``train.stage2_init=best``, the weights stage 2 starts from: the one place either changes,
        run by the trainer after every hook's ``after_epoch`` and before any ``write_epoch``."""
        candidates = [(results[k], name) for k, name in (("mAP", "online"), ("mAP_ema", "momentum")) if k in results]
        if candidates and max(candidates)[0] > self.best["mAP"]:
            value, encoder = max(candidates)
            self.best.update(mAP=value, epoch=self.epoch, encoder=encoder)
            if self.loop.stage(self.epoch) == 1 and self.loop.stage2_init == "best":
                self.stage2_start = {k: v.detach().cpu().clone() for k, v in self.unwrapped.state_dict().items()}

    @property
    def improved(self) -> bool:
        """This epoch's evaluation improved ``best``."""
        return self.best["epoch"] == self.epoch

    def results(self) -> dict[str, Any]:
        """Final metrics: the last epoch's record plus the best-on-test epoch (labelled as such)."""
        return {"last": self.storage.latest, "best_on_test": dict(self.best), "run_dir": str(self.run_dir)}

    def momentum_encoder(self) -> MomentumEncoder:  # θ': EMA of parameters (and BN buffers if memory.ema_buffers)
        return self.parts.momentum.build(self.unwrapped)

    def uses_momentum_encoder(self, epoch: int) -> bool:
        return self.parts.objective.uses_momentum_encoder(self.loop.stage(epoch))

    def log_choices(self) -> None:
        if not dist.is_main():
            return
        log.info("%s", self.parts.objective.describe(self.loop.stage(self.epoch)))
        log.info("%s", self.parts.description)
        log.info("device %s (world size %d), amp %s (extraction %s)", self.device, self.world_size, self.amp_dtype,
                 self.extract_amp or "fp32")
