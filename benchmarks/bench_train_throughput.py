"""Images/s of dmireid's full training iteration vs a bare forward/backward/Adam loop.

    python benchmarks/bench_train_throughput.py --quick                 # CPU, seconds
    python benchmarks/bench_train_throughput.py                          # resnet18, 64×32, batch 64
    python benchmarks/bench_train_throughput.py --method cc
    python benchmarks/bench_train_throughput.py --arch resnet50 --height 256 --width 128 \\
        --batch-size 256 --device cuda --workers 8 --set model.bn_group_size=64 memory.mip_instances=16

What runs. The config is ``load_config("demo", overrides)`` (the preset is read at run time; the
flags above and ``--set key=value`` override it), the data is the synthetic dataset the preset
names (generated once into the usual cache folder, or ``--data-root``). The public
``Trainer(build.training(cfg))`` is set up as training does; pseudo-labels are the ground-truth ids
of the synthetic train set (no feature extraction, no clustering). The epoch's objective is built
by the run's own ``parts.objective`` on ``--clusters`` clusters (default 700, Market-1501's usual
count; must be >= the number of train ids, the extra rows are clusters that never appear in a
batch, as in a real epoch) of K_mip random unit features each, θ' instances random unit vectors
too (no extraction pass: their values do not change the cost). Then, in one process, per round:

  loader          the real DataLoader alone (ClusterBatchSampler → SeededImageDataset, PIL + the
                  train transform, ``data.num_workers`` workers), batches only, nothing else
  ours (loader)   ``Trainer.train_iterations`` exactly as training calls it: that DataLoader and
                  per batch ``trainer.step`` (``TrainStep``): forward, DCP (dmi) or CC loss, MIP
                  loss with the momentum encoder's no-grad forward, backward, Adam step, proxy
                  updates, MIP replace, EMA update
  ours (preload)  the same ``trainer.step`` on a few batches made by the real loader beforehand,
                  already on the device, cycled (the loop's loss bookkeeping aside)
  bare            the same backbone and batch size on random tensors already on the device:
                  forward + backward (loss = a dot product with a fixed random target) + Adam step
                  (same lr, weight decay, autocast, channels_last); for dmi also the no-grad
                  forward of a second copy of the model in eval mode (what the momentum encoder
                  costs; whenever the step runs that forward), for cc not

Ratios (images/s over images/s of ``bare``):
  ours (preload) / bare   our memory / loss / EMA / bookkeeping overhead alone (target >= 0.9)
  ours (loader)  / bare   what training gets end to end, data loading included; on CPU with few
                          cores the PIL decode + augmentation competes with the model for the same
                          cores, so this is mostly a statement about the machine (compare with the
                          ``loader`` row: the loader alone caps throughput)

The first ``--warmup`` iterations of every measurement (worker start-up, allocator warm-up,
cudnn autotuning) are excluded: timing runs from the end of iteration ``warmup`` to the end of the
last one (a Trainer hook, or the harness's Timer; CUDA is synchronised at both ends). Reported per mode: the median
images/s over ``--rounds`` rounds (modes interleaved in each round so that load changes hit all
of them), the main process's CPU time per iteration (on a busy CPU-only machine the CPU-time
ratio of ``ours (preload)`` and ``bare`` is the steadier estimate of the overhead: waiting for a
core costs wall time, not CPU time), and on CUDA the peak allocated memory. Per-operation microseconds of the memory
updates vs per-sample loops (C = 700 / 1,100, B = 256, d = 2048) are in
``benchmarks/bench_memory_updates.py``.
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
import sys
import tempfile

import harness  # noqa: I001  (first: this checkout first on the import path, OMP_WAIT_POLICY before torch)
import numpy as np
import torch
import torch.nn.functional as F

from dmireid import build
from dmireid.config import load_config
from dmireid.data import ImageDataset
from dmireid.devices import autocast, autocast_dtype
from dmireid.engine import Batch, Hook, Trainer
from dmireid.engine.loader import train_loader
from dmireid.objectives import ObjectiveContext
from dmireid.seeding import epoch_seed

Clocks = tuple[float, float]  # (wall s, CPU s of this process: its threads, not data-loader workers)


class IterationTimer(Hook):
    """Wall and CPU time from the end of iteration ``warmup`` to the end of the last iteration."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = warmup, total
        self.timer: harness.Timer | None = None

    def after_iter(self, trainer, iteration):
        if iteration == self.warmup:
            self.timer = harness.Timer(harness.device_sync(trainer.device)).__enter__()
        if iteration == self.total:
            self.timer.__exit__()

    @property
    def seconds(self) -> Clocks:
        return self.timer.seconds, self.timer.cpu_seconds


def random_objective(trainer: Trainer, clusters: int, seed: int = 0):
    """The run's objective (``parts.objective``) on ``clusters`` clusters of K_mip random unit
    features each; θ' instances random unit rows (no extraction)."""
    k = max(1, int(getattr(trainer.parts.objective.settings, "mip_instances", 1) or 1))
    g = torch.Generator().manual_seed(seed)
    d = trainer.unwrapped.feature_dim
    labels = torch.arange(clusters).repeat_interleave(k)
    features = F.normalize(torch.randn(len(labels), d, generator=g), dim=1)

    def embed_momentum(rows: np.ndarray) -> torch.Tensor:
        return F.normalize(torch.randn(len(rows), d, generator=g), dim=1)

    context = ObjectiveContext(features=features, labels=labels, cameras=torch.zeros(len(labels), dtype=torch.int64),
                               epoch=0, stage=trainer.loop.stage(0), seed=epoch_seed(trainer.loop.seed, 0),
                               device=trainer.device,
                               embed_momentum=embed_momentum if trainer.ema is not None else None)
    return trainer.parts.objective.build(context)


def make_loader(trainer: Trainer, labels: np.ndarray):
    """The epoch's DataLoader as ``Trainer.train_iterations`` makes it."""
    sampler = trainer.parts.sampler.build(labels, trainer.train_cameras, trainer.epoch, trainer.rank,
                                          trainer.world_size)
    return train_loader(sampler, ImageDataset(trainer.dataset.train, trainer.parts.train_transform),
                        epoch_seed(trainer.loop.seed, trainer.epoch), trainer.loop.batch_size, trainer.rank,
                        trainer.loop.num_workers, pin_memory=trainer.device.type == "cuda")


def build_config(args, out_dir: str):
    overrides = [f"method={args.method}", f"device={args.device}", f"output_dir={out_dir}",
                 f"model.arch={args.arch}", f"data.height={args.height}", f"data.width={args.width}",
                 f"train.batch_size={args.batch_size}", f"train.iters={args.warmup + args.iters}",
                 "train.epochs=1"]
    if args.workers is not None:
        overrides.append(f"data.num_workers={args.workers}")
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    preset = load_config("demo", overrides + list(args.set))
    k = args.num_instances or max(preset.data.num_instances, args.batch_size // 16)
    return load_config("demo", overrides + [f"data.num_instances={k}"] + list(args.set))


def measure_trainer(trainer: Trainer, labels: np.ndarray) -> tuple[Clocks, float]:
    """((wall s, CPU s) over the timed iterations, peak CUDA MB) of one ``Trainer.train_iterations``."""
    timer = trainer.hooks[0]
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    trainer.storage.begin_epoch(trainer.epoch)  # train_iterations writes the epoch's loss and images/s
    trainer.train_iterations(labels)
    return timer.seconds, peak_mb(trainer.device)


def measure_preloaded(trainer: Trainer, batches: list[Batch], warmup: int) -> tuple[Clocks, float]:
    """The same, ``trainer.step`` on batches already on the device (timed after ``warmup`` of them)."""
    trainer.model.train()
    if trainer.ema is not None:
        trainer.ema.module.train(trainer.loop.momentum_forward == "train")
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    for batch in batches[:warmup]:
        trainer.step(trainer, batch)
    with harness.Timer(harness.device_sync(trainer.device)) as clock:
        for batch in batches[warmup:]:
            trainer.step(trainer, batch)
    return (clock.seconds, clock.cpu_seconds), peak_mb(trainer.device)


def measure_loader(trainer: Trainer, labels: np.ndarray, warmup: int) -> tuple[Clocks, float]:
    batches = iter(make_loader(trainer, labels))
    for _ in itertools.islice(batches, warmup):
        pass
    with harness.Timer() as clock:
        for _ in batches:
            pass
    return (clock.seconds, clock.cpu_seconds), float("nan")


def measure_bare(model, ema_copy, optimizer, scaler, batch, target, warmup: int, total: int, device,
                 amp: bool) -> tuple[Clocks, float]:
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    clock = harness.Timer(harness.device_sync(device))
    for i in range(1, total + 1):
        with autocast(device, autocast_dtype(device, amp)):
            f = model(batch).float()
        if ema_copy is not None:
            with torch.no_grad(), autocast(device, autocast_dtype(device, amp)):
                ema_copy(batch).float()
        loss = -(f * target).sum() / len(f)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if i == warmup:
            clock.__enter__()
    clock.__exit__()
    return (clock.seconds, clock.cpu_seconds), peak_mb(device)


def peak_mb(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def preload_batches(trainer: Trainer, labels: np.ndarray, distinct: int, total: int) -> list[Batch]:
    """``total`` Batches cycling ``distinct`` ones made by the real loader, already on the device."""
    labels_t, cameras_t = torch.from_numpy(labels), torch.from_numpy(trainer.train_cameras)
    needs_cameras = trainer.objective.needs_cameras
    batches = []
    for images, index, ok in itertools.islice(make_loader(trainer, labels), distinct):
        images = images[ok].to(trainer.device)
        if trainer.use_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        cameras = cameras_t[index[ok]].to(trainer.device) if needs_cameras else None
        batches.append((images, labels_t[index[ok]].to(trainer.device), cameras))
    return [Batch(*batches[i % len(batches)], iteration=i) for i in range(total)]


def parser():
    p = harness.arguments(__doc__, threads=0, quick="few iterations, one round (seconds)")
    p.add_argument("--method", choices=["dmi", "cc"], default="dmi")
    p.add_argument("--arch", choices=["resnet18", "resnet34", "resnet50"], default="resnet18")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-instances", type=int, default=0,
                   help="K images per cluster (default: max(preset K, batch/16): 16 clusters at batch 256)")
    p.add_argument("--clusters", type=int, default=700, help="memory rows C (>= number of train ids)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per measurement (default 20, quick 4)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 3, quick 2)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds, median reported (default 3, quick 1)")
    p.add_argument("--preload", type=int, default=4, help="distinct pre-loaded batches, cycled")
    p.add_argument("--workers", type=int, default=None, help="data.num_workers (default: the preset's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--data-root", default=None, help="synthetic dataset folder (default: the cache folder)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    return p


def bare_loop(cfg, trainer: Trainer, args, total: int):
    """The bare forward/backward/Adam loop on random tensors, as a zero-argument measurement."""
    device, d = trainer.device, trainer.unwrapped.feature_dim
    g = torch.Generator().manual_seed(0)
    bare = build.model(cfg).to(device)
    if trainer.use_channels_last:
        bare = bare.to(memory_format=torch.channels_last)
    bare_ema = None  # the momentum encoder's no-grad forward, whenever the step runs one
    momentum_forward = trainer.objective.needs_momentum_features or trainer.loop.momentum_forward == "train"
    if trainer.ema is not None and momentum_forward:
        bare_ema = copy.deepcopy(bare).requires_grad_(False).eval()
    bare_opt = torch.optim.Adam([p for p in bare.parameters() if p.requires_grad], lr=cfg.train.lr,
                                weight_decay=cfg.train.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=trainer.amp_dtype == torch.float16)
    batch = torch.randn(cfg.train.batch_size, 3, cfg.data.height, cfg.data.width, generator=g).to(device)
    if trainer.use_channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    target = F.normalize(torch.randn(cfg.train.batch_size, d, generator=g), dim=1).to(device)
    return lambda: measure_bare(bare, bare_ema, bare_opt, scaler, batch, target, args.warmup, total, device,
                                trainer.amp_dtype is not None)


COLUMNS = [harness.Column("mode", "mode"), harness.Column("images_per_s", "images/s", ".1f"),
           harness.Column("min", "min", ".1f"), harness.Column("max", "max", ".1f"),
           harness.Column("ms_per_iter", "ms/iter", ".1f"), harness.Column("vs_bare", "÷ bare", ".3f"),
           harness.Column("cpu_ms_per_iter", "CPU ms/iter", ".1f"),
           harness.Column("peak_cuda_mb", "peak CUDA MB", ".0f")]


def body(args, report) -> None:
    args.iters = args.iters or (4 if args.quick else 20)
    args.warmup = args.warmup or (2 if args.quick else 3)
    args.rounds = args.rounds or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="dmireid-bench-") as tmp:
        cfg = build_config(args, tmp)
        total = args.warmup + args.iters
        build.import_plugins(cfg)
        trainer = Trainer(build.training(cfg, progress=False), hooks=[IterationTimer(args.warmup, total)],
                          progress=False, default_hooks=False)
        trainer.setup()
        device = trainer.device
        labels = np.unique(trainer.train_identities, return_inverse=True)[1].astype(np.int64)
        num_ids = int(labels.max()) + 1
        if args.clusters < num_ids:
            raise SystemExit(f"--clusters {args.clusters} < {num_ids} train ids")
        trainer.objective = random_objective(trainer, args.clusters)
        preloaded = preload_batches(trainer, labels, min(args.preload, total), total)
        d = trainer.unwrapped.feature_dim
        P = cfg.train.batch_size // cfg.data.num_instances
        mem = f"C = {args.clusters} clusters"
        if cfg.method == "dmi":
            mem += f", K_mip = {cfg.memory.mip_instances}, dcp_updates = {cfg.memory.dcp_updates}"
        else:
            mem += f", update = {cfg.memory.cc_update}"
        print(f"torch {torch.__version__}, device {device}, amp {trainer.amp_dtype}; method {cfg.method}, "
              f"{cfg.model.arch} (d = {d}) at {cfg.data.height}×{cfg.data.width}, batch {cfg.train.batch_size} = "
              f"{P} clusters × {cfg.data.num_instances}, bn_group_size {cfg.model.bn_group_size}, data.num_workers "
              f"{cfg.data.num_workers}; {mem}; {len(labels)} train images, {num_ids} ids; {args.rounds} round(s) of "
              f"{args.warmup} warm-up + {args.iters} timed iterations per mode", flush=True)
        modes = {
            "loader": lambda: measure_loader(trainer, labels, args.warmup),
            "ours (loader)": lambda: measure_trainer(trainer, labels),
            "ours (preload)": lambda: measure_preloaded(trainer, preloaded, args.warmup),
            "bare": bare_loop(cfg, trainer, args, total),
        }
        rates = {name: [] for name in modes}
        cpu_ms = {name: [] for name in modes}  # main-process CPU ms per iteration
        peaks = {name: float("nan") for name in modes}
        for r in range(args.rounds):
            for name, fn in modes.items():
                (wall, cpu), peak = fn()
                rates[name].append(args.iters * cfg.train.batch_size / wall)
                cpu_ms[name].append(1000 * cpu / args.iters)
                peaks[name] = peak if math.isnan(peaks[name]) else max(peaks[name], peak)
            print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in rates.items()) + " images/s",
                  flush=True)

    median = {name: statistics.median(v) for name, v in rates.items()}
    cpu = {name: statistics.median(v) for name, v in cpu_ms.items()}
    rows = [{"mode": name, "images_per_s": median[name], "min": min(rates[name]), "max": max(rates[name]),
             "ms_per_iter": 1000 * cfg.train.batch_size / median[name], "vs_bare": median[name] / median["bare"],
             "cpu_ms_per_iter": cpu[name], "peak_cuda_mb": None if math.isnan(peaks[name]) else peaks[name]}
            for name in modes]
    report.table("images/s: median over rounds; CPU ms/iter: this process only, data-loader workers not included",
                 rows, COLUMNS)
    preload_ratio, loader_ratio = median["ours (preload)"] / median["bare"], median["ours (loader)"] / median["bare"]
    report.add(preload_vs_bare=preload_ratio, loader_vs_bare=loader_ratio,
               preload_vs_bare_cpu_time=cpu["bare"] / cpu["ours (preload)"])
    print(f"\nours (preload) / bare = {preload_ratio:.3f}  (memory, losses, EMA, bookkeeping overhead; target >= 0.9)")
    if device.type != "cuda":
        print(f"  same from CPU time, less sensitive to other load on the machine: "
              f"{cpu['bare'] / cpu['ours (preload)']:.3f}")
    print(f"ours (loader)  / bare = {loader_ratio:.3f}  (end to end with the real data loader; the loader alone "
          f"gives {median['loader']:.1f} images/s)")
    print("µs per memory update vs per-sample loops (C = 700 / 1,100, B = 256, d = 2048): "
          "python benchmarks/bench_memory_updates.py")


if __name__ == "__main__":
    sys.exit(harness.main(body, parser()))
