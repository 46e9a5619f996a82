"""How far each recipe default moves the demo: the demo run with today's defaults (the peer recipe's
values), with 0.1.0's values (our variant), and with each recipe default reverted alone.

    python benchmarks/bench_recipe_ablation.py                       # every variant, the full demo (~9 min each)
    python benchmarks/bench_recipe_ablation.py --only recipe ours    # some variants
    python benchmarks/bench_recipe_ablation.py --set train.epochs=8  # shorter runs
    python benchmarks/bench_recipe_ablation.py --quick               # recipe vs ours, smoke preset, 1 epoch

Each variant is one ``dmireid train`` (demo preset) in a fresh subprocess with its own run folder
under ``--out`` and the same data. Printed per variant: last-epoch mAP / R1 of θ and θ', the
untrained model's mAP (``dmireid evaluate --random-init``, seeded like training) and the wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import harness

# 0.1.0's behaviour ("ours") of every key whose default became the recipe's value
OURS = {"data.camera_rule": "spread", "data.erasing": "torchvision", "memory.dcp_margins": "[0.0,0.0]",
        "memory.mip_source": "momentum", "memory.ema_forward": "eval", "memory.ema_buffers": "true",
        "train.amp_extract": "true"}
VARIANTS = {"recipe": [], "ours": [f"{k}={v}" for k, v in OURS.items()]}
VARIANTS.update({f"revert {k}": [f"{k}={v}" for k2, v in OURS.items() if k2 == k] for k in OURS
                 if k != "train.amp_extract"})  # amp_extract does nothing on the CPU


def run(args, name: str, overrides: list[str]) -> dict:
    out = Path(args.out) / name.replace(" ", "_").replace(".", "_")
    command = [sys.executable, "-m", "dmireid", "train", "--no-progress", *args.config, f"output_dir={out}",
               f"data.root={args.data}", *overrides, *args.set]
    done = harness.run_process(command, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, cwd=harness.REPOSITORY)
    result = {"name": name, "seconds": done.seconds, "peak_mb": done.peak_rss_bytes / harness.MIB}
    if done.returncode != 0:
        return {**result, "error": done.stderr.strip().splitlines()[-1:]}
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {**result, **{k: last.get(k) for k in ("mAP", "rank1", "mAP_ema", "rank1_ema")}}


def untrained(args) -> float:
    proc = subprocess.run([sys.executable, "-m", "dmireid", "evaluate", "--random-init", "--quiet", *args.config,
                           f"data.root={args.data}", *args.set], capture_output=True, text=True, cwd=harness.REPOSITORY)
    return float(proc.stdout.strip().splitlines()[-1].split()[0])


def percent(value) -> str:
    return f"{100 * value:.1f}"


COLUMNS = [harness.Column("name", "variant"), harness.Column("mAP", "mAP θ", percent),
           harness.Column("rank1", "R1 θ", percent), harness.Column("mAP_ema", "mAP θ′", percent),
           harness.Column("rank1_ema", "R1 θ′", percent), harness.Column("seconds", "time min", lambda v: f"{v / 60:.1f}"),
           harness.Column("peak_mb", "peak MB", ".0f"), harness.Column("error", "error")]


def parser():
    p = harness.arguments(__doc__, threads=None, quick="recipe vs ours on the smoke preset, 1 epoch (seconds)")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--data", default="data/ablation-synthetic")
    p.add_argument("--only", nargs="*", help="variant names (default: all)")
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run")
    return p


def body(args, report) -> None:
    args.config = []
    with tempfile.TemporaryDirectory(prefix="dmireid-ablation-") as tmp:
        if args.quick:
            args.config, args.only = ["--config", "smoke"], args.only or ["recipe", "ours"]
            args.out, args.data, args.set = f"{tmp}/runs", f"{tmp}/data", ["train.epochs=1", *args.set]
        args.out, args.data = str(Path(args.out).absolute()), str(Path(args.data).absolute())
        baseline = untrained(args)
        print(f"untrained model (seeded like training): mAP {baseline:.1f}", flush=True)
        rows = [run(args, name, VARIANTS[name]) for name in args.only or list(VARIANTS)]
    report.table(f"{'smoke' if args.quick else 'demo'} preset per variant, last epoch (untrained: mAP "
                 f"{baseline:.1f})", rows, COLUMNS)
    report.add(untrained_mAP=baseline)
    if any("error" in r for r in rows):
        return 1


if __name__ == "__main__":
    sys.exit(harness.main(body, parser()))
