#!/usr/bin/env python
"""Device check: one stage-2 epoch of a paper preset on a Market-1501-sized synthetic set.

    python benchmarks/gpu_check.py --out $OUT            # one GPU: ~2-3 minutes, made for <= 4
    python benchmarks/gpu_check.py --tiny --device cpu   # the same code in seconds (what CI runs)
    python benchmarks/gpu_check.py --real DATA --weights FILE --out $OUT   # real images: bench_real.py's
        # protocol at --budget gpu (DMI, then CC and ground truth while time is left); see bench_real.real_check

Any working directory; a stock PyTorch image's packages (no faiss). Timed: (1) the data, 751 train
ids / 13,410 train images (Market-1501: 751 / 12,936) from the one-process generator unless ``--data
DIR`` holds them, in 128×64 files like Market-1501's (~2 ms an image; 320×128 files: ~7 ms, 3+
minutes); (2) one epoch of ``load_config(preset, overrides)`` by the public ``Trainer``, where only
``model.pretrained=none``, the data, ``knn_backend=torch``, ``schedule=single epochs=1`` (DMI stage
2: DCP + MIP + θ') and ``output_dir`` change: extraction, pseudo-labels (kNN on the device), the
objective (incl. θ' instance extraction), the iterations — trained on the synthetic ids (751
clusters, as a trained model finds) unless ``--labels found``; (3) peak CUDA memory vs 24/40/48 GB
cards, one batch's loss in fp32 (TF32 off) vs autocast, and with ``--eval`` θ and θ' on query +
gallery. Table on stdout; numbers in ``--json`` (default ``OUT/gpu_check.json``, rewritten per step).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import harness  # noqa: E402,I001  (first: this checkout first on the import path, OMP_WAIT_POLICY before torch)
import numpy as np  # noqa: E402
import torch  # noqa: E402

import dmireid  # noqa: E402
from dmireid import build  # noqa: E402
from dmireid.config import load_config  # noqa: E402
from dmireid.data import load_dataset  # noqa: E402
from dmireid.data.synthetic import MARKER  # noqa: E402
from dmireid.devices import resolve_device  # noqa: E402
from dmireid.engine import Hook, ProgressHook, Trainer  # noqa: E402
from dmireid.errors import DmireidError  # noqa: E402
from timed_parts import TimedStep, instrumented  # noqa: E402

GIB = 2**30
# usable GiB assumed per card class (A10 22.5 / RTX 4090 24.0; A100-40GB 39.4; L40S 44.4 / A6000 47.5)
CARDS = {"24 GB": 22.0, "40 GB": 39.0, "48 GB": 44.0}
FULL = {"num_ids": 1502, "num_cameras": 6, "seed": 0, "image": (128, 64), "images_per_camera": [2, 6]}
TINY = {"num_ids": 24, "num_cameras": 6, "seed": 0, "image": (64, 32), "images_per_camera": [2, 6]}
TINY_OVERRIDES = ["model.arch=resnet18", "data.height=64", "data.width=32", "train.batch_size=16",
                  "data.num_instances=4", "train.iters=2", "model.bn_group_size=0", "data.num_workers=0",
                  "train.extract_batch_size=64", "memory.mip_instances=4"]
SETTINGS = ["model.arch", "model.pretrained", "model.pooling", "model.bn_group_size", "model.channels_last",
            "data.height", "data.width", "train.batch_size", "data.num_instances", "train.iters", "data.num_workers",
            "data.camera_rule", "data.erasing", "train.lr", "train.extract_batch_size", "pseudo_labels.labeler",
            "pseudo_labels.knn_backend", "pseudo_labels.eps", "pseudo_labels.k1", "pseudo_labels.k2",
            "pseudo_labels.min_samples", "memory.dcp_updates", "memory.dcp_margins", "memory.mip_instances",
            "memory.mip_source", "memory.ema_forward", "memory.ema_buffers", "memory.ema_momentum"]
PRESET_SCHEDULE = ["train.schedule", "train.epochs", "train.stage1_epochs", "train.iters", "model.pretrained"]


def setting(cfg, key: str):
    """``cfg``'s value at the dotted ``key`` as JSON data (None where the key does not exist)."""
    for part in key.split("."):
        cfg = getattr(cfg, part, None)
    return list(cfg) if isinstance(cfg, (list, tuple)) else cfg


class PhaseClock(Hook):
    """Seconds per phase (CUDA synchronised at each phase end), peaks, and every step's span."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.marks, self.peaks = device, {}, {}, {}
        self.step_spans: list[tuple[float, float]] = []  # (start, end) wall times of each step call

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> dict | None:
        if self.device.type != "cuda":
            return None
        return {"allocated_gib": torch.cuda.max_memory_allocated(self.device) / GIB,
                "reserved_gib": torch.cuda.max_memory_reserved(self.device) / GIB}

    def before_epoch(self, trainer):
        self.reset_peak()
        self.marks["epoch"] = self.now()

    def after_pseudo_labels(self, trainer, labels):
        self.marks["labels"] = self.now()
        self.seconds["pseudo_labels"] = self.marks["labels"] - self.marks["epoch"] - self.seconds["extraction"]

    def after_iter(self, trainer, iteration):
        if iteration in (1, trainer.loop.iters):
            self.marks["first_iter" if iteration == 1 else "last_iter"] = self.now()
        if iteration == trainer.loop.iters:
            self.seconds["iterations"] = self.marks["last_iter"] - self.marks["objective_done"]
            self.peaks["iterations"] = self.peak()


@torch.no_grad()
def amp_check(trainer: Trainer, images: torch.Tensor, y: torch.Tensor) -> dict:
    """The objective's loss of one batch, forward in fp32 (TF32 off) vs under each autocast dtype
    (the run's; on CUDA also fp16, the peer's). Train mode as in training (BN: batch statistics)."""
    model, device = trainer.unwrapped.train(), trainer.device
    x, y = images.to(device), y.to(device)
    x = x.contiguous(memory_format=torch.channels_last) if trainer.use_channels_last else x

    def relative(value, reference) -> float:
        return abs(float(value) - float(reference)) / max(abs(float(reference)), 1e-12)

    def loss_of(dtype):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            f = model(x).float()
        return trainer.objective.loss(f, y)  # outside autocast, as in Trainer.step

    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref, ref_terms = loss_of(None)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    run_dtype = trainer.amp_dtype or torch.bfloat16  # a CPU run trains in fp32: bf16 CPU autocast shown
    dtypes = [run_dtype] + ([torch.float16] if device.type == "cuda" and run_dtype != torch.float16 else [])
    result = {"batch": int(len(y)), "loss_fp32": float(ref), "run_dtype": str(run_dtype).replace("torch.", ""),
              "run_uses_amp": trainer.amp_dtype is not None, "dtypes": {}}
    for dtype in dtypes:
        loss, terms = loss_of(dtype)
        result["dtypes"][str(dtype).replace("torch.", "")] = {
            "loss": float(loss), "rel_diff": relative(loss, ref),
            "terms_rel_diff": {k: relative(v, ref_terms[k]) for k, v in terms.items()}}
    result["rel_diff"] = result["dtypes"][result["run_dtype"]]["rel_diff"]
    return result


def card_verdicts(allocated_gib: float, reserved_gib: float, context_gib: float) -> dict[str, str]:
    """Per card class: ``yes`` (peak reserved + context fit), ``tight`` (only peak allocated +
    context fit: a leaner caching pool might do), else ``no``."""
    return {card: "yes" if reserved_gib + context_gib <= usable else
            "tight" if allocated_gib + context_gib <= usable else "no" for card, usable in CARDS.items()}


def memory_report(clock: PhaseClock, device: torch.device) -> dict | None:
    """Peaks, the CUDA context (device memory in use beyond PyTorch's pool), card verdicts."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    context = max(0.0, (total - free - torch.cuda.memory_reserved(device)) / GIB)
    peaks = [p for p in clock.peaks.values() if p]
    allocated, reserved = (max((p[k] for p in peaks), default=0.0) for k in ("allocated_gib", "reserved_gib"))
    return {"total_gib": total / GIB, **clock.peaks, "peak_allocated_gib": allocated, "peak_reserved_gib": reserved,
            "context_gib": context, "usable_gib_assumed": CARDS, "fits": card_verdicts(allocated, reserved, context)}


def prepare_data(root: Path, options: dict) -> tuple[dict, np.ndarray]:
    """The synthetic set (generated when absent or made otherwise): counts, seconds; train ids 0..C-1."""
    marker = root / MARKER
    before = marker.stat().st_mtime_ns if marker.exists() else None
    start = time.perf_counter()
    ds = load_dataset("synthetic", root, **options)
    seconds = time.perf_counter() - start
    generated = before is None or marker.stat().st_mtime_ns != before
    images = len(ds.train) + len(ds.query) + len(ds.gallery)
    ids = np.unique([pid for _, pid, _ in ds.train], return_inverse=True)[1].astype(np.int64)
    return ({"root": str(root), "options": options, "train_images": len(ds.train), "train_ids": int(ids.max()) + 1,
             "query": len(ds.query), "gallery": len(ds.gallery), "images": images, "generated": generated,
             "seconds": seconds, "ms_per_image": 1000 * seconds / images if generated else None}, ids)


def throughput(clock: PhaseClock, trainer: Trainer) -> dict:
    """images/s after the first step; the share of that time spent outside ``step`` (data wait)."""
    n, batch, m = len(clock.step_spans), trainer.loop.batch_size, clock.marks
    steady = m.get("last_iter", 0.0) - m.get("first_iter", 0.0)
    gaps = sum(b[0] - a[1] for a, b in zip(clock.step_spans, clock.step_spans[1:]))
    ok = n > 1 and steady > 0
    return {"iterations": n, "first_iteration_s": m.get("first_iter", 0.0) - m.get("objective_done", 0.0),
            "images_per_s": (n - 1) * batch / steady if ok else None,
            "seconds_per_iteration": steady / (n - 1) if ok else None, "data_wait_share": gaps / steady if ok else None,
            "trainer_images_per_s": trainer.storage.latest.get("images_per_s")}


def fmt(value, spec=".1f", unit=""):
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def table(r: dict) -> str:
    """The report as aligned ``name  value`` lines."""
    s, d, p, t, m, a = r["settings"], r["data"], r["phases"], r["throughput"], r["memory"], r["amp"]
    pl, ps, e = r["pseudo_labels"], r["preset_schedule"], r.get("evaluation") or {}
    wait = None if t["data_wait_share"] is None else 100 * t["data_wait_share"]
    rows = [("preset", f"{r['preset']}: " + ", ".join(f"{k.split('.')[1]} {v}" for k, v in ps.items())
             + " -> this check: one stage-2 epoch"),
            ("device", f"{r['device']}, torch {r['torch']}, dmireid from {r['dmireid']['path']}"),
            ("settings", " ".join(f"{k.split('.')[-1]}={s[k]}" for k in SETTINGS)
             + f" amp={r['amp_dtype']} extraction={'amp' if r['extraction_amp'] else 'fp32'}"),
            ("data", f"{d['train_images']} train images / {d['train_ids']} ids (+{d['query']} query, {d['gallery']} "
             f"gallery), files {d['options']['height']}x{d['options']['width']}, "
             + (f"generated in {d['seconds']:.1f} s ({d['ms_per_image']:.2f} ms/image)" if d["generated"]
                else f"reused, loaded in {d['seconds']:.1f} s")),
            ("set-up s", f"{fmt(p.get('setup'))} (data index, model, optimiser, θ'; imports "
             f"{fmt(p.get('imports'))} s)"),
            ("extraction s", f"{fmt(p.get('extraction'))} ({d['train_images']} train images, θ)"),
            ("pseudo-labels s", f"{fmt(p.get('pseudo_labels'))} (labeler {fmt(p.get('labeler'))} s, kNN on "
             f"{r['knn_device']}; found {pl.get('found_clusters')} clusters + {pl.get('found_outliers')} outliers; "
             f"trained on {pl.get('clusters_used')} clusters = {pl.get('labels_used')})"),
            ("objective s", f"{fmt(p.get('objective'))} (incl. θ' extraction {fmt(p.get('theta_prime_extraction'))}"
             f" s of {pl.get('theta_prime_images')} images)"),
            ("iterations s", f"{fmt(p.get('iterations'))} ({t['iterations']} iterations: first "
             f"{fmt(t['first_iteration_s'])} s, then {fmt(t['seconds_per_iteration'], '.3f')} s each, "
             f"{fmt(wait, '.0f', '%')} of it waiting for data)"),
            ("evaluation s", f"{fmt(p.get('evaluation'))} (mAP θ {fmt(e.get('mAP'), '.1%')}, θ' "
             f"{fmt(e.get('mAP_ema'), '.1%')}; random init)" if "evaluation" in p else "off (--eval)"),
            ("epoch s", f"{fmt(p.get('epoch'))} (x {ps['train.epochs']} epochs = "
             f"{fmt(r['estimated_recipe_hours'], '.1f')} h for the preset, evaluation not counted)"),
            ("images/s", f"{fmt(t['images_per_s'], '.0f')} (the trainer's own count: "
             f"{fmt(t['trainer_images_per_s'], '.0f')})")]
    if m is None:
        rows.append(("peak GPU memory", "n/a (not on CUDA)"))
    else:
        it = m["iterations"] or {}
        rows += [("peak GPU memory", f"batch {s['train.batch_size']}: allocated {it.get('allocated_gib', 0):.2f} GiB, "
                  f"reserved {it.get('reserved_gib', 0):.2f} GiB (whole epoch: {m['peak_allocated_gib']:.2f} / "
                  f"{m['peak_reserved_gib']:.2f}), CUDA context {m['context_gib']:.2f} GiB, "
                  f"card {m['total_gib']:.0f} GiB"),
                 ("fits one GPU", ", ".join(f"{c}: {v}" for c, v in m["fits"].items())
                  + " (yes = reserved + context fit; tight = only allocated + context)")]
    amp = ", ".join(f"{k} {v['rel_diff']:.2e} (loss {v['loss']:.5f})" for k, v in a["dtypes"].items())
    rows += [("AMP vs fp32 loss", f"relative difference {amp}; fp32 loss {a['loss_fp32']:.5f}, one batch of "
              f"{a['batch']}" + ("" if a["run_uses_amp"] else " (this run trains in fp32: CPU autocast shown)")),
             ("total s", fmt(p.get("total"))), ("machine", harness.machine_line(r["machine"]).split(": ", 1)[1])]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--preset", default="dmi_market1501", help="preset name or YAML path (default dmi_market1501)")
    add("--device", default="cuda", help="cuda | cuda:N | cpu | auto (default cuda)")
    add("--out", type=Path, help="folder for the JSON and the run folder (default: a temporary one)")
    add("--json", type=Path, help="JSON report path (default OUT/gpu_check.json)")
    add("--data", type=Path, help="synthetic set folder, reused when it holds the same set (default: temporary)")
    add("--image-size", type=lambda v: tuple(int(x) for x in v.lower().split("x", 1)), metavar="HxW",
        help="size of the generated files (default 128x64; --tiny 64x32)")
    add("--tiny", action="store_true", help="24 ids, 64x32, resnet18, batch 16 = 4x4, 2 iterations, 0 workers")
    add("--quick", action="store_true", help="--tiny --device cpu (what CI runs)")
    add("--labels", choices=["true", "found"], default="true", help="train on the synthetic ids or the labeler's")
    add("--eval", action="store_true", help="also time the query+gallery evaluation of θ and θ'")
    add("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides, applied last")
    args = parser.parse_args(argv)
    if args.quick:
        args.tiny, args.device = True, "cpu"
    return args


def build_overrides(args: argparse.Namespace, root: Path, out: Path, options: dict) -> list[str]:
    """What the check changes in the preset (everything else stays the preset's)."""
    return ["model.pretrained=none", "data.name=synthetic", f"data.root={root}",
            *(f"data.options.{k}={v}" for k, v in options.items()), "pseudo_labels.knn_backend=torch",
            "train.schedule=single", "train.epochs=1", f"output_dir={out / 'run'}", f"device={args.device}",
            *(TINY_OVERRIDES if args.tiny else []), *args.set]


def time_epoch(cfg, true_labels: np.ndarray | None) -> tuple[Trainer, PhaseClock, dict]:
    """The public Trainer on timed parts and a timed step, with the timing hook: set-up, one epoch."""
    clock, seen = PhaseClock(resolve_device(cfg.device)), {}
    start = time.perf_counter()
    build.import_plugins(cfg)
    parts = instrumented(build.training(cfg, progress=False), clock, true_labels, seen)
    trainer = Trainer(parts, hooks=[clock, ProgressHook(cfg.train.iters, 1, cfg.train.batch_size, True, 20)],
                      progress=False, default_hooks=False)  # timing only: no checkpoint, no per-epoch evaluation
    trainer.step = TimedStep(trainer.step, clock, seen)
    trainer.setup()
    clock.seconds["setup"] = clock.now() - start
    trainer.run()
    clock.seconds["epoch"] = clock.now() - clock.marks["epoch"]
    return trainer, clock, seen


def run(args: argparse.Namespace) -> dict:
    """The whole check; the JSON is rewritten after the data, after the epoch and at the end."""
    imported = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    out = (args.out or scratch).absolute()
    json_path = (args.json or out / "gpu_check.json").absolute()
    spec = TINY if args.tiny else FULL
    try:
        height, width = args.image_size or spec["image"]
        options = {**{k: spec[k] for k in ("num_ids", "num_cameras", "seed")}, "height": height, "width": width,
                   "images_per_camera": spec["images_per_camera"]}
        root = (args.data or scratch / "synthetic").absolute()
        overrides = build_overrides(args, root, out, options)
        preset = load_config(args.preset, ["model.pretrained=none"])
        report: dict = {"status": "running", "preset": args.preset, "overrides": overrides,
                        "preset_schedule": {k: setting(preset, k) for k in PRESET_SCHEDULE},
                        "torch": torch.__version__, "cuda": torch.version.cuda,
                        "dmireid": {"version": dmireid.__version__, "path": str(Path(dmireid.__file__).parent)}}
        cfg = load_config(args.preset, overrides)
        resolve_device(cfg.device)  # a missing GPU fails before the data is written
        report["settings"] = {k: setting(cfg, k) for k in SETTINGS}
        report["data"], true_labels = prepare_data(root, options)
        harness.write_json(json_path, report)
        trainer, clock, seen = time_epoch(cfg, true_labels if args.labels == "true" else None)
        clock.seconds["imports"] = imported - STARTED
        report.update(device=torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu",
                      knn_device=str(trainer.device), extraction_amp=bool(trainer.extract_amp),
                      amp_dtype=str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "off",
                      pseudo_labels={k: v for k, v in seen.items() if k != "batch"},
                      throughput=throughput(clock, trainer), memory=memory_report(clock, trainer.device),
                      loss=trainer.storage.latest.get("loss"), phases=clock.seconds,
                      estimated_recipe_hours=clock.seconds["epoch"] * preset.train.epochs / 3600)
        harness.write_json(json_path, report)
        if "batch" not in seen:
            raise DmireidError(f"the epoch trained no batch (the labeler found {seen.get('found_clusters')} "
                               f"clusters; --labels true trains on the synthetic ids)")
        start = clock.now()
        report["amp"] = amp_check(trainer, *seen["batch"])
        clock.seconds["amp_check"] = clock.now() - start
        if args.eval:
            start = clock.now()
            report["evaluation"] = trainer.evaluate_encoders()
            clock.seconds["evaluation"] = clock.now() - start
        clock.seconds["total"] = time.perf_counter() - STARTED
        report["machine"] = harness.machine()
        report["status"] = "done"
        harness.write_json(json_path, report)
    finally:
        shutil.rmtree(scratch / "synthetic", ignore_errors=True)
        shutil.rmtree(scratch / "run", ignore_errors=True)
        if not any(scratch.iterdir()):
            scratch.rmdir()
    report["json"] = str(json_path)
    return report


def main(argv=None) -> int:
    if "--real" in (sys.argv[1:] if argv is None else argv):  # the real-image form: bench_real's protocol
        from bench_real import real_check  # a sibling of this script

        return real_check(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    try:
        report = run(args)
    except DmireidError as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2
    print(table(report))
    print(f"json  {report['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
