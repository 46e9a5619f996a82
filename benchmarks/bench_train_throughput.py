"""Images/s of dmireid's full training iteration vs a bare forward/backward/Adam loop.

    python benchmarks/bench_train_throughput.py --quick                 # CPU, seconds
    python benchmarks/bench_train_throughput.py                          # resnet18, 64×32, batch 64
    python benchmarks/bench_train_throughput.py --method cc
    python benchmarks/bench_train_throughput.py --arch resnet50 --height 256 --width 128 \\
        --batch-size 256 --device cuda --workers 8 --set model.bn_group_size=64 memory.mip_instances=16

What runs. The config is ``load_config("demo", overrides)`` (the preset is read at run time; the
flags above and ``--set key=value`` override it), the data is the synthetic dataset the preset
names (generated once into the usual cache folder, or ``--data-root``). Pseudo-labels are the
ground-truth ids of the synthetic train set (no feature extraction, no clustering). The memories
have ``--clusters`` rows (default 700, Market-1501's usual cluster count; must be >= the number of
train ids, the extra rows are clusters that never appear in a batch, as in a real epoch) filled with
random unit vectors — their values do not change the cost. Then, in one process, per round:

  loader          the real DataLoader alone (ClusterBatchSampler → SeededImageDataset, PIL + the
                  train transform, ``data.num_workers`` workers), batches only, nothing else
  ours (loader)   ``Trainer.train_iterations`` exactly as training calls it: that DataLoader,
                  forward, DCP (dmi) or CC loss, MIP loss with the momentum encoder's no-grad
                  forward, backward, Adam step, proxy updates, MIP replace, EMA update
  ours (preload)  the same ``Trainer.train_iterations``, but ``make_loader`` returns a few batches
                  made by the real loader beforehand and already on the device, cycled
  bare            the same backbone and batch size on random tensors already on the device:
                  forward + backward (loss = a dot product with a fixed random target) + Adam step
                  (same lr, weight decay, autocast, channels_last); for dmi also the no-grad
                  forward of a second copy of the model in eval mode (what the momentum encoder
                  costs; whenever the trainer runs that forward), for cc not

Ratios (images/s over images/s of ``bare``):
  ours (preload) / bare   our memory / loss / EMA / bookkeeping overhead alone (target >= 0.9)
  ours (loader)  / bare   what training gets end to end, data loading included; on CPU with few
                          cores the PIL decode + augmentation competes with the model for the same
                          cores, so this is mostly a statement about the machine (compare with the
                          ``loader`` row: the loader alone caps throughput)

The first ``--warmup`` iterations of every measurement (worker start-up, allocator warm-up,
cudnn autotuning) are excluded: timing runs from the end of iteration ``warmup`` to the end of the
last one (a Trainer hook; CUDA is synchronised at both ends). Reported per mode: the median
images/s over ``--rounds`` rounds (modes interleaved in each round so that load changes hit all
of them), the main process's CPU time per iteration (on a busy CPU-only machine the CPU-time
ratio of ``ours (preload)`` and ``bare`` is the steadier estimate of the overhead: waiting for a
core costs wall time, not CPU time), and on CUDA the peak allocated memory. Per-operation microseconds of the memory
updates vs per-sample loops (C = 700 / 1,100, B = 256, d = 2048) are in
``benchmarks/bench_memory_updates.py``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
import math
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dmireid.config import load_config  # noqa: E402
from dmireid.engine import Hook, Trainer  # noqa: E402
from dmireid import build  # noqa: E402
from dmireid.devices import autocast, autocast_dtype  # noqa: E402
from dmireid.memory import MultiInstanceProxies  # noqa: E402


def clocks() -> tuple[float, float]:
    """(wall, CPU time of this process: its threads, not data-loader workers)."""
    return time.perf_counter(), time.process_time()


def elapsed(start: tuple[float, float]) -> tuple[float, float]:
    now = clocks()
    return now[0] - start[0], now[1] - start[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class IterationTimer(Hook):
    """Wall time from the end of iteration ``warmup`` to the end of the last iteration."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = warmup, total
        self.start = self.stop = None

    def after_iter(self, trainer, iteration):
        if iteration == self.warmup:
            sync(trainer.device)
            self.start = clocks()
        if iteration == self.total:
            sync(trainer.device)
            self.stop = clocks()

    @property
    def seconds(self) -> tuple[float, float]:
        return self.stop[0] - self.start[0], self.stop[1] - self.start[1]


class BenchTrainer(Trainer):
    """The real Trainer with two benchmark-only substitutions (no change to what a step does):
    MIP instances are random unit vectors instead of θ' features of cluster members (saves an
    extraction pass; the values do not change the cost), and ``make_loader`` can return batches
    prepared beforehand (``self.preloaded``) instead of a DataLoader."""

    preloaded: list | None = None

    def init_instances(self, labels):
        num, k, d = int(labels.max()) + 1, self.cfg.memory.mip_instances, self.unwrapped.feature_dim
        g = torch.Generator().manual_seed(0)
        instances = F.normalize(torch.randn(num, k, d, generator=g), dim=2).to(self.device)
        return MultiInstanceProxies(instances, temperature=self.cfg.memory.temperature,
                                    negatives_topk=self.cfg.memory.mip_negatives_topk)

    def make_loader(self, labels):
        if self.preloaded is not None:
            return self.preloaded
        return super().make_loader(labels)


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


def measure_trainer(trainer: BenchTrainer, labels: np.ndarray, preloaded: list | None):
    """((wall s, CPU s) over the timed iterations, peak CUDA MB) of one Trainer.train_iterations call."""
    timer = trainer.hooks[0]
    trainer.preloaded = preloaded
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    trainer.train_iterations(labels)
    return timer.seconds, peak_mb(trainer.device)


def measure_loader(trainer: BenchTrainer, labels: np.ndarray, warmup: int):
    trainer.preloaded = None
    start = None
    for i, (images, index, ok) in enumerate(trainer.make_loader(labels), start=1):
        if i == warmup:
            start = clocks()
    return elapsed(start), float("nan")


def measure_bare(model, ema_copy, optimizer, scaler, batch, target, warmup: int, total: int, device,
                 amp: bool):
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = None
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
            sync(device)
            start = clocks()
    sync(device)
    return elapsed(start), peak_mb(device)


def peak_mb(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def preload_batches(trainer: BenchTrainer, labels: np.ndarray, distinct: int, total: int) -> list:
    trainer.preloaded = None
    batches = []
    for images, index, ok in itertools.islice(trainer.make_loader(labels), distinct):
        if trainer.use_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        batches.append((images.to(trainer.device), index, ok))
    return [batches[i % len(batches)] for i in range(total)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few iterations, one round (seconds)")
    parser.add_argument("--method", choices=["dmi", "cc"], default="dmi")
    parser.add_argument("--arch", choices=["resnet18", "resnet34", "resnet50"], default="resnet18")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-instances", type=int, default=0,
                        help="K images per cluster (default: max(preset K, batch/16): 16 clusters at batch 256)")
    parser.add_argument("--clusters", type=int, default=700, help="memory rows C (>= number of train ids)")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed iterations per measurement (default 20, quick 4)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 3, quick 2)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds, median reported (default 3, quick 1)")
    parser.add_argument("--preload", type=int, default=4, help="distinct pre-loaded batches, cycled")
    parser.add_argument("--workers", type=int, default=None, help="data.num_workers (default: the preset's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--data-root", default=None, help="synthetic dataset folder (default: the cache folder)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    args = parser.parse_args(argv)
    args.iters = args.iters or (4 if args.quick else 20)
    args.warmup = args.warmup or (2 if args.quick else 3)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    with tempfile.TemporaryDirectory(prefix="dmireid-bench-") as tmp:
        cfg = build_config(args, tmp)
        total = args.warmup + args.iters
        trainer = BenchTrainer(cfg, hooks=[IterationTimer(args.warmup, total)], progress=False, default_hooks=False)
        trainer.setup()
        device = trainer.device
        pids = np.array([pid for _, pid, _ in trainer.dataset.train])
        labels = np.unique(pids, return_inverse=True)[1].astype(np.int64)
        num_ids = int(labels.max()) + 1
        if args.clusters < num_ids:
            raise SystemExit(f"--clusters {args.clusters} < {num_ids} train ids")
        d = trainer.unwrapped.feature_dim
        g = torch.Generator().manual_seed(0)
        trainer.build_memories(F.normalize(torch.randn(args.clusters, d, generator=g), dim=1),
                               np.arange(args.clusters))
        preloaded = preload_batches(trainer, labels, min(args.preload, total), total)

        amp = trainer.amp_dtype is not None
        bare = build.model(cfg).to(device)
        if trainer.use_channels_last:
            bare = bare.to(memory_format=torch.channels_last)
        bare_ema = None  # the momentum encoder's no-grad forward, when the trainer runs one
        if trainer.mip is not None and cfg.memory.mip_source == "momentum":
            bare_ema = copy.deepcopy(bare).requires_grad_(False).eval()
        bare_opt = torch.optim.Adam([p for p in bare.parameters() if p.requires_grad], lr=cfg.train.lr,
                                    weight_decay=cfg.train.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=trainer.amp_dtype == torch.float16)
        batch = torch.randn(cfg.train.batch_size, 3, cfg.data.height, cfg.data.width, generator=g).to(device)
        if trainer.use_channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        target = F.normalize(torch.randn(cfg.train.batch_size, d, generator=g), dim=1).to(device)

        P = cfg.train.batch_size // cfg.data.num_instances
        mem = f"C = {args.clusters} clusters"
        if cfg.method == "dmi":
            mem += f", K_mip = {cfg.memory.mip_instances}, dcp_updates = {cfg.memory.dcp_updates}"
        else:
            mem += f", update = {cfg.memory.cc_update}"
        print(f"torch {torch.__version__}, device {device}, CPU threads {torch.get_num_threads()}, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, amp {trainer.amp_dtype}")
        print(f"method {cfg.method}, {cfg.model.arch} (d = {d}) at {cfg.data.height}×{cfg.data.width}, "
              f"batch {cfg.train.batch_size} = {P} clusters × {cfg.data.num_instances}, bn_group_size "
              f"{cfg.model.bn_group_size}, data.num_workers {cfg.data.num_workers}; {mem}; "
              f"{len(labels)} train images, {num_ids} ids")
        print(f"{args.rounds} round(s) of {args.warmup} warm-up + {args.iters} timed iterations per mode\n",
              flush=True)

        modes = {
            "loader": lambda: measure_loader(trainer, labels, args.warmup),
            "ours (loader)": lambda: measure_trainer(trainer, labels, None),
            "ours (preload)": lambda: measure_trainer(trainer, labels, preloaded),
            "bare": lambda: measure_bare(bare, bare_ema, bare_opt, scaler, batch, target, args.warmup, total,
                                         device, amp),
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
    print()
    cuda = device.type == "cuda"
    header = f"{'mode':<16}{'images/s':>10}{'min':>9}{'max':>9}{'ms/iter':>9}{'÷ bare':>8}{'CPU ms/iter':>13}"
    header += f"{'peak CUDA MB':>14}" if cuda else ""
    print(header)
    print("-" * len(header))
    for name in modes:
        v = median[name]
        peak = f"{peaks[name]:>14.0f}" if cuda and not math.isnan(peaks[name]) else ""
        print(f"{name:<16}{v:>10.1f}{min(rates[name]):>9.1f}{max(rates[name]):>9.1f}"
              f"{1000 * cfg.train.batch_size / v:>9.1f}{v / median['bare']:>8.3f}{cpu[name]:>13.1f}{peak}")
    print("(images/s: median over rounds; CPU ms/iter: this process only, data-loader workers not included)")
    print(f"\nours (preload) / bare = {median['ours (preload)'] / median['bare']:.3f}  "
          f"(memory, losses, EMA, bookkeeping overhead; target >= 0.9)")
    if not cuda:
        print(f"  same from CPU time, less sensitive to other load on the machine: "
              f"{cpu['bare'] / cpu['ours (preload)']:.3f}")
    print(f"ours (loader)  / bare = {median['ours (loader)'] / median['bare']:.3f}  "
          f"(end to end with the real data loader; the loader alone gives {median['loader']:.1f} images/s)")
    print("µs per memory update vs per-sample loops (C = 700 / 1,100, B = 256, d = 2048): "
          "python benchmarks/bench_memory_updates.py")

if __name__ == "__main__":
    main(sys.argv[1:])
