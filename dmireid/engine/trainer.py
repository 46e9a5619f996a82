"""The epoch loop of spec §1: extract → pseudo-label → build memories → iterate → hooks.

    from dmireid.config import load_config
    from dmireid.engine import train
    results = train(load_config("smoke", ["output_dir=runs/x"]))

Checkpoints are written at epoch ends, where the memories are rebuilt from the model anyway (cluster
ids change every epoch), so a checkpoint needs no memory state. Per epoch every global RNG is re-seeded from ``(train.seed, epoch)`` and the sampler, data-loader
workers and MIP replacement draw from generators seeded the same way, so a run resumed from an
epoch-end checkpoint repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import Config, save_config
from ..data import ClusterBatchSampler, ImageDataset, build_train_transform, load_dataset
from ..errors import DmireidError
from ..evaluation import evaluate
from ..memory import ClusterProxies, DiscrepantProxies, MomentumEncoder, MultiInstanceProxies, cluster_centroids
from ..models import build_model
from ..pseudo_labels import cluster, jaccard_distance, label_quality
from .. import distributed as dist
from ..checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from .features import autocast_for, extract_features
from .loader import SeededBatches, SeededImageDataset
from .hooks import CheckpointHook, EvaluationHook, Hook, MetricsHook, ProgressHook

log = logging.getLogger("dmireid.train")

# Keys that may change when a run is resumed; every other key must match the checkpoint's config.
RESUMABLE_KEYS = {"train.epochs", "train.eval_every", "output_dir", "device", "data.root", "data.num_workers",
                  "train.extract_batch_size", "train.max_empty_epochs", "data.corrupt_images"}


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available else cpu; asking for CUDA without one is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DmireidError(f"device={name} was asked for but no CUDA device is available (use device=cpu or auto)")
    return torch.device(name)


def build_model_from_config(cfg: Config) -> torch.nn.Module:
    """The ReIDModel that ``cfg.model`` describes."""
    m = cfg.model
    return build_model(m.arch, pretrained=m.pretrained, pooling=m.pooling, gem_p=m.gem_p,
                       last_stride=m.last_stride, bn_group_size=m.bn_group_size)


def dataset_options(cfg: Config) -> dict[str, Any]:
    """The dataset loader's options (``cfg.data.options``)."""
    return dict(cfg.data.options)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resumable(saved: dict, cfg: Config, path: Path) -> None:
    """Raise a one-line error when ``cfg`` differs from the checkpoint's config beyond RESUMABLE_KEYS."""
    old, new = flatten(saved), flatten(cfg.to_dict())
    diffs = [k for k in new if k not in RESUMABLE_KEYS and old.get(k) != new[k]]
    if diffs:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diffs[:3])
        raise DmireidError(f"cannot resume from {path}: its config differs ({shown}); "
                           f"use another output_dir or the same settings")


class Trainer:
    """Owns the model, momentum encoder, memories and optimiser; hooks do the rest."""

    log_every = 20

    def __init__(self, cfg: Config, hooks: list[Hook] | None = None, progress: bool = True):
        self.cfg = cfg
        self.run_dir = Path(cfg.output_dir)
        self.progress = progress
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        self.rank, self.world_size = dist.init_distributed(self.device)
        self.hooks = hooks if hooks is not None else self.default_hooks()
        self.epoch = 0  # epochs finished
        self.best: dict[str, Any] = {"mAP": -1.0, "epoch": -1, "encoder": ""}
        self.empty_epochs = 0
        self.record: dict[str, Any] = {}
        self.last_logged_loss: float | None = None
        self.ema: MomentumEncoder | None = None
        self.memory: torch.nn.Module | None = None
        self.mip: MultiInstanceProxies | None = None
        self.current_labels: np.ndarray | None = None  # this epoch's pseudo-labels (N,), -1 = outlier

    def default_hooks(self) -> list[Hook]:
        return [ProgressHook(self.progress), EvaluationHook(self.cfg.train.eval_every),
                MetricsHook(self.run_dir), CheckpointHook(self.run_dir)]

    # ----------------------------------------------------------------------------- set-up
    def setup(self, resume_from: Path | None = None) -> None:
        cfg = self.cfg
        seed_everything(cfg.train.seed)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.dataset = self.load_data()
        self.model = self.build_model().to(self.device)
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
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if self.mip_active(0):
            self.ema = MomentumEncoder(self.unwrapped, alpha=cfg.memory.ema_momentum)
        checkpoint = resume_from or (self.run_dir / "last.pt")
        if checkpoint.exists():
            self.resume(checkpoint)
        elif dist.is_main():
            save_config(cfg, self.run_dir / "config.yaml")
        self.log_choices()

    def check_divisible(self) -> None:
        clusters = self.cfg.train.batch_size // self.cfg.data.num_instances
        if clusters % self.world_size:
            raise DmireidError(f"train.batch_size/data.num_instances = {clusters} clusters per batch cannot be split "
                               f"evenly over {self.world_size} processes")

    @property
    def use_channels_last(self) -> bool:
        return self.cfg.model.channels_last and self.device.type == "cuda"

    @property
    def amp_dtype(self) -> torch.dtype | None:
        if not (self.cfg.train.amp and self.device.type == "cuda"):
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def load_data(self):
        data, options = self.cfg.data, dataset_options(self.cfg)
        if dist.is_main():
            dataset = load_dataset(data.name, data.root, **options)
        dist.barrier()
        if not dist.is_main():
            dataset = load_dataset(data.name, data.root, **options)
        if len(dataset.train) < self.cfg.pseudo_labels.min_samples:
            raise DmireidError(f"dataset {data.name} at {dataset.root}: {len(dataset.train)} training images, "
                               f"fewer than pseudo_labels.min_samples={self.cfg.pseudo_labels.min_samples}")
        return dataset

    def build_model(self) -> torch.nn.Module:
        return build_model_from_config(self.cfg)

    def make_optimizer(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.cfg.train.lr, weight_decay=self.cfg.train.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.cfg.train.step_size,
                                                    gamma=self.cfg.train.gamma)
        return optimizer, scheduler

    def log_choices(self) -> None:
        if not dist.is_main():
            return
        c, m = self.cfg, self.cfg.memory
        if c.method == "cc":
            log.info("method cc: one proxy per cluster, update=%s", m.cc_update)
        else:
            log.info("method dmi: schedule=%s, dcp_updates=%s, dcp_margins=%s, mip_instances=%d, mip_source=%s, "
                     "mip_negatives_topk=%s, mip_weight=%s, momentum encoder in eval mode for batch features",
                     c.train.schedule, m.dcp_updates, m.dcp_margins, m.mip_instances, m.mip_source,
                     m.mip_negatives_topk or "all", m.mip_weight)
        log.info("device %s (world size %d), amp %s, bn_group_size %d, pseudo-labels eps %.2f k1 %d k2 %d",
                 self.device, self.world_size, self.amp_dtype, c.model.bn_group_size, c.pseudo_labels.eps,
                 c.pseudo_labels.k1, c.pseudo_labels.k2)

    def mip_active(self, epoch: int) -> bool:
        if self.cfg.method != "dmi":
            return False
        return self.cfg.train.schedule == "single" or epoch >= self.cfg.train.stage1_epochs

    # ----------------------------------------------------------------------------- resume
    def resume(self, path: Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        check_resumable(state["config"], self.cfg, path)
        self.unwrapped.load_state_dict(state["model"])
        if state.get("ema_model") is not None:
            if self.ema is None:
                self.ema = MomentumEncoder(self.unwrapped, alpha=self.cfg.memory.ema_momentum)
            self.ema.module.load_state_dict(state["ema_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.best, self.empty_epochs = state["epoch"], state["best"], state["empty_epochs"]
        restore_rng_state(state["rng"])
        if dist.is_main():
            save_config(self.cfg, self.run_dir / "config.yaml")
            log.info("resumed from %s at epoch %d", path, self.epoch)

    def checkpoint_payload(self) -> dict[str, Any]:
        unwrap = self.model.module if hasattr(self.model, "module") else self.model
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch + 1,
            "model": unwrap.state_dict(),
            "ema_model": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": self.best,
            "empty_epochs": self.empty_epochs,
            "metrics": dict(self.record),
            "rng": capture_rng_state(),
        }

    def update_best(self) -> bool:
        """Track the best evaluated mAP (over θ and θ'); True when this epoch improved it."""
        candidates = [(self.record[k], name) for k, name in (("mAP", "online"), ("mAP_ema", "momentum"))
                      if k in self.record]
        if not candidates:
            return False
        value, encoder = max(candidates)
        if value > self.best["mAP"]:
            self.best = {"mAP": value, "epoch": self.epoch, "encoder": encoder}
            return True
        return False

    # ----------------------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        for hook in self.hooks:
            hook.before_train(self)
        while self.epoch < self.cfg.train.epochs:
            self.run_epoch()
            self.epoch += 1
        for hook in self.hooks:
            hook.after_train(self)
        return self.results()

    def run_epoch(self) -> None:
        cfg, epoch = self.cfg, self.epoch
        seed_everything(epoch_seed(cfg.train.seed, epoch))
        if cfg.train.schedule == "two_stage" and epoch == cfg.train.stage1_epochs and self.ema is None:
            self.start_stage_two()
        self.record = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
        for hook in self.hooks:
            hook.before_epoch(self)
        start = time.time()
        features, ok = extract_features(self.unwrapped, self.dataset.train, cfg.data.height, cfg.data.width,
                                        cfg.train.extract_batch_size, self.device, cfg.data.num_workers,
                                        amp=self.amp_dtype is not None, channels_last=self.use_channels_last,
                                        progress=self.progress, description=f"extract train (epoch {epoch + 1})")
        labels = self.current_labels = self.pseudo_labels(features, ok)
        self.record["time_pseudo_labels"] = time.time() - start
        num_clusters = int(labels.max()) + 1 if labels.size else 0
        if num_clusters < 2:
            self.skip_epoch(num_clusters)
        else:
            self.empty_epochs = 0
            self.build_memories(features, labels)
            self.train_iterations(labels)
        self.scheduler.step()
        for hook in self.hooks:
            hook.after_epoch(self)

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model

    def skip_epoch(self, num_clusters: int) -> None:
        self.empty_epochs += 1
        self.record.update(loss=0.0, skipped=True)
        message = (f"epoch {self.epoch + 1}: DBSCAN found {num_clusters} cluster(s) "
                   f"(pseudo_labels.eps={self.cfg.pseudo_labels.eps}); training skipped this epoch")
        if self.empty_epochs >= self.cfg.train.max_empty_epochs:
            raise DmireidError(f"{message}; stopping after {self.empty_epochs} such epochs "
                               f"(train.max_empty_epochs={self.cfg.train.max_empty_epochs}): try another eps")
        log.warning(message)

    def start_stage_two(self) -> None:
        """two_stage: best stage-1 weights, fresh optimiser and scheduler, momentum encoder."""
        best = self.run_dir / "best.pt"
        if best.exists():
            self.unwrapped.load_state_dict(load_checkpoint(best, map_location=self.device)["model"])
            log.info("stage 2: starting from the best stage-1 weights %s", best)
        else:
            log.info("stage 2: no evaluated stage-1 checkpoint, starting from the last weights")
        self.optimizer, self.scheduler = self.make_optimizer()
        self.ema = MomentumEncoder(self.unwrapped, alpha=self.cfg.memory.ema_momentum)

    # ----------------------------------------------------------------------------- pseudo labels
    def pseudo_labels(self, features: torch.Tensor, ok: np.ndarray) -> np.ndarray:
        """Jaccard + DBSCAN on readable images (rank 0, broadcast); unreadable → -1."""
        pl = self.cfg.pseudo_labels
        n_bad = int((~ok).sum())
        if n_bad:
            first = self.dataset.train[int(np.flatnonzero(~ok)[0])][0]
            if self.cfg.data.corrupt_images == "stop":
                raise DmireidError(f"unreadable training image {first} ({n_bad} in all; "
                                   f"data.corrupt_images=skip leaves them out)")
            log.warning("%d unreadable training image(s) left out this epoch, e.g. %s", n_bad, first)
        labels = np.full(len(ok), -1, dtype=np.int64)
        if dist.is_main():
            good = np.flatnonzero(ok)
            distance = jaccard_distance(features[good], k1=min(pl.k1, len(good) - 1), k2=pl.k2,
                                        max_distance=pl.eps, knn_backend=pl.knn_backend, progress=self.progress)
            labels[good] = cluster(distance, eps=pl.eps, min_samples=pl.min_samples)
        labels = dist.broadcast(torch.from_numpy(labels).to(self.device)).cpu().numpy()
        num_clusters = int(labels.max()) + 1 if labels.size else 0
        self.record.update(num_clusters=num_clusters, num_outliers=int((labels[ok] < 0).sum()), num_unreadable=n_bad)
        true = np.array([pid for _, pid, _ in self.dataset.train])
        if num_clusters >= 1 and (true >= 0).all():
            self.record.update(label_quality(labels[ok], true[ok]))
        return labels

    # ----------------------------------------------------------------------------- memories
    def build_memories(self, features: torch.Tensor, labels: np.ndarray) -> None:
        m = self.cfg.memory
        y = torch.from_numpy(labels)
        centroids = cluster_centroids(features, y).to(self.device)
        if self.cfg.method == "cc":
            self.memory = ClusterProxies(centroids, update=m.cc_update, momentum=m.momentum, temperature=m.temperature)
        else:
            self.memory = DiscrepantProxies(centroids, updates=tuple(m.dcp_updates), momentum=m.momentum,
                                            temperature=m.temperature,
                                            margin=max(m.dcp_margins) if m.dcp_margins else 0.0)
        self.mip = self.init_instances(labels) if self.mip_active(self.epoch) else None

    def init_instances(self, labels: np.ndarray) -> MultiInstanceProxies:
        """K_mip θ' features (eval mode) per cluster, members drawn uniformly with replacement."""
        k = self.cfg.memory.mip_instances
        generator = torch.Generator().manual_seed(epoch_seed(self.cfg.train.seed, self.epoch))
        members = MultiInstanceProxies.sample_members(labels, k, generator).numpy()  # C×K
        unique, inverse = np.unique(members, return_inverse=True)
        cfg = self.cfg
        feats, _ = extract_features(self.ema.module, [self.dataset.train[i] for i in unique], cfg.data.height,
                                    cfg.data.width, cfg.train.extract_batch_size, self.device, cfg.data.num_workers,
                                    amp=self.amp_dtype is not None, channels_last=self.use_channels_last,
                                    progress=self.progress, description="extract θ' instances")
        instances = feats[torch.from_numpy(inverse.reshape(members.shape))].to(self.device)
        return MultiInstanceProxies(instances, temperature=cfg.memory.temperature,
                                    negatives_topk=cfg.memory.mip_negatives_topk)

    # ----------------------------------------------------------------------------- iterations
    def make_loader(self, labels: np.ndarray) -> DataLoader:
        cfg = self.cfg
        seed = epoch_seed(cfg.train.seed, self.epoch)
        sampler = ClusterBatchSampler(labels, np.array([c for _, _, c in self.dataset.train]),
                                      num_instances=cfg.data.num_instances, batch_size=cfg.train.batch_size,
                                      iters=cfg.train.iters, seed=cfg.train.seed, epoch=self.epoch,
                                      camera_aware=cfg.data.camera_aware, rank=self.rank, world_size=self.world_size)
        dataset = ImageDataset(self.dataset.train, build_train_transform(cfg.data.height, cfg.data.width))
        batches = SeededBatches(sampler, seed, cfg.train.batch_size, self.rank)
        return DataLoader(SeededImageDataset(dataset), batch_sampler=batches, num_workers=cfg.data.num_workers,
                          pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(seed))

    def train_iterations(self, labels: np.ndarray) -> None:
        self.model.train()
        if self.ema is not None:
            self.ema.module.eval()
        labels_t = torch.from_numpy(labels)
        mip_gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.cfg.train.seed, self.epoch))
        losses, terms_sum, n_images, start = [], {}, 0, None
        for iteration, (images, index, ok) in enumerate(self.make_loader(labels)):
            if not bool(ok.all()):
                self.handle_unreadable_batch(index[~ok])
            images = images[ok].to(self.device, non_blocking=True)
            if self.use_channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            y = labels_t[index[ok]].to(self.device, non_blocking=True)
            loss, terms = self.step(images, y, mip_gen, iteration)
            losses.append(loss.detach())
            for key, value in terms.items():
                terms_sum[key] = terms_sum.get(key, 0.0) + value.detach()
            if start is None:  # images/s from the end of the first step: no worker start-up
                start = time.time()
            else:
                n_images += len(y)
            if (iteration + 1) % self.log_every == 0 or iteration + 1 == self.cfg.train.iters:
                self.last_logged_loss = float(losses[-1])
            for hook in self.hooks:
                hook.after_iter(self, iteration + 1)
        elapsed = time.time() - start if start is not None else 0.0
        self.record["loss"] = float(torch.stack(losses).mean())
        self.record.update({k: float(v) / len(losses) for k, v in terms_sum.items()})
        self.record["images_per_s"] = n_images * self.world_size / max(elapsed, 1e-9)

    def handle_unreadable_batch(self, bad_index: torch.Tensor) -> None:
        path = self.dataset.train[int(bad_index[0])][0]
        if self.cfg.data.corrupt_images == "stop":
            raise DmireidError(f"unreadable training image {path} (data.corrupt_images=skip leaves such images out)")
        log.warning("skipping %d unreadable image(s) in a batch, e.g. %s", len(bad_index), path)

    def check_finite(self, loss: torch.Tensor, iteration: int) -> None:
        """Stop before a non-finite loss reaches the weights or the memories (one scalar sync)."""
        if not bool(torch.isfinite(loss.detach())):
            raise DmireidError(f"loss became {float(loss)} at epoch {self.epoch + 1} iteration {iteration + 1}; "
                               f"stopped, the last good checkpoint {self.run_dir / 'last.pt'} is kept "
                               f"(try a lower train.lr)")

    def step(self, images: torch.Tensor, y: torch.Tensor, mip_gen: torch.Generator, iteration: int):
        """One optimisation step; returns (loss, {term: value}) as device tensors."""
        with autocast_for(self.device, self.amp_dtype is not None):
            f = self.model(images).float()  # B×d, unit rows
        momentum_f = None
        if self.mip is not None and self.cfg.memory.mip_source == "momentum":
            with torch.no_grad(), autocast_for(self.device, self.amp_dtype is not None):
                momentum_f = self.ema.module(images).float()
        terms = {}
        if self.cfg.method == "cc":
            loss = self.memory.loss(f, y)
        else:
            terms["loss_dcp"] = self.memory.loss(f, y)
            loss = terms["loss_dcp"]
            if self.mip is not None:
                terms["loss_mip"] = self.mip.loss(f, y)
                loss = loss + self.cfg.memory.mip_weight * terms["loss_mip"]
        self.check_finite(loss, iteration)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            dist.average_buffers(self.unwrapped)
            f_all, y_all = dist.all_gather_uneven(f.detach()), dist.all_gather_uneven(y)
            self.memory.update(f_all, y_all)
            if self.mip is not None:
                source = momentum_f if momentum_f is not None else f.detach()
                self.mip.replace(dist.all_gather_uneven(source), y_all, mip_gen)
            if self.ema is not None:
                self.ema.update(self.unwrapped)
        return loss, terms

    # ----------------------------------------------------------------------------- evaluation
    def evaluate_encoders(self) -> dict[str, float]:
        """mAP / rank-k of θ and (when present) θ' on query+gallery."""
        out = {}
        encoders = [("", self.unwrapped)] + ([("_ema", self.ema.module)] if self.ema is not None else [])
        for suffix, model in encoders:
            metrics = evaluate_model(model, self.dataset, self.cfg, self.device, progress=self.progress,
                                     amp=self.amp_dtype is not None, channels_last=self.use_channels_last)
            if metrics is not None:
                out.update({f"{k}{suffix}": v for k, v in metrics.items()})
        return out

    def results(self) -> dict[str, Any]:
        """Final metrics: the last epoch's record plus the best-on-test epoch (labelled as such)."""
        return {"last": dict(self.record), "best_on_test": dict(self.best), "run_dir": str(self.run_dir)}


def evaluate_model(model, dataset, cfg: Config, device, progress=True, amp=False, channels_last=False, rerank=False):
    """Query/gallery evaluation of one encoder; returns {mAP, rank1, rank5, rank10, mINP} (rank 0)."""
    samples = dataset.query + dataset.gallery
    feats, _ = extract_features(model, samples, cfg.data.height, cfg.data.width, cfg.train.extract_batch_size,
                                device, cfg.data.num_workers, amp=amp, channels_last=channels_last,
                                progress=progress, description="extract query+gallery")
    if not dist.is_main():
        return None
    nq = len(dataset.query)
    pids = np.array([s[1] for s in samples])
    cams = np.array([s[2] for s in samples])
    result = evaluate(feats[:nq], feats[nq:], pids[:nq], pids[nq:], cams[:nq], cams[nq:], rerank=rerank)
    cmc = result["cmc"]
    return {"mAP": float(result["mAP"]), "rank1": float(cmc[0]), "rank5": float(cmc[4]), "rank10": float(cmc[9]),
            "mINP": float(result["mINP"])}


def train(cfg: Config, resume: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Train with ``cfg``; resumes from ``resume`` (a run folder or checkpoint) or ``output_dir/last.pt``.

    Returns ``{"last": metrics of the last epoch, "best_on_test": {...}, "run_dir": str}``.
    """
    resume_path = None
    if resume is not None:
        resume_path = Path(resume)
        if resume_path.is_dir():
            resume_path = resume_path / "last.pt"
        if not resume_path.exists():
            raise DmireidError(f"--resume {resume}: no checkpoint last.pt there")
    trainer = Trainer(cfg, progress=progress)
    try:
        trainer.setup(resume_from=resume_path)
        return trainer.run()
    finally:
        dist.cleanup()
