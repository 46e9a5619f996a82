"""How far each recipe default moves the demo: the demo run with today's defaults (the peer recipe's
values), with 0.1.0's values (our variant), and with each recipe default reverted alone.

    python benchmarks/bench_recipe_ablation.py                       # every variant, the full demo (~9 min each)
    python benchmarks/bench_recipe_ablation.py --only recipe ours    # some variants
    python benchmarks/bench_recipe_ablation.py --set train.epochs=8  # shorter runs

Each variant is one ``dmireid train`` (demo preset) in a fresh subprocess with its own run folder
under ``--out`` and the same data. Printed per variant: last-epoch mAP / R1 of θ and θ', the
untrained model's mAP (``dmireid evaluate --random-init``, seeded like training) and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# 0.1.0's behaviour ("ours") of every key whose default became the recipe's value
OURS = {"data.camera_rule": "spread", "data.erasing": "torchvision", "memory.dcp_margins": "[0.0,0.0]",
        "memory.mip_source": "momentum", "memory.ema_forward": "eval", "memory.ema_buffers": "true",
        "train.amp_extract": "true"}
VARIANTS = {"recipe": [], "ours": [f"{k}={v}" for k, v in OURS.items()]}
VARIANTS.update({f"revert {k}": [f"{k}={v}" for k2, v in OURS.items() if k2 == k] for k in OURS
                 if k != "train.amp_extract"})  # amp_extract does nothing on the CPU


def run(args, name: str, overrides: list[str]) -> dict:
    out = Path(args.out) / name.replace(" ", "_").replace(".", "_")
    command = [sys.executable, "-m", "dmireid", "train", "--no-progress", f"output_dir={out}",
               f"data.root={args.data}", *overrides, *args.set]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.time() - start
    if proc.returncode != 0:
        return {"name": name, "error": proc.stderr.strip().splitlines()[-1:], "seconds": seconds}
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {"name": name, "seconds": seconds, **{k: last.get(k) for k in ("mAP", "rank1", "mAP_ema", "rank1_ema")}}


def untrained(args) -> float:
    proc = subprocess.run([sys.executable, "-m", "dmireid", "evaluate", "--random-init", "--quiet",
                           f"data.root={args.data}", *args.set], capture_output=True, text=True)
    return float(proc.stdout.strip().splitlines()[-1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--data", default="data/ablation-synthetic")
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run")
    args = parser.parse_args()
    names = args.only or list(VARIANTS)
    print(f"untrained demo model (seeded like training): mAP {untrained(args):.1f}")
    print(f"{'variant':<28}{'mAP θ':>8}{'R1 θ':>8}{'mAP θ′':>8}{'R1 θ′':>8}{'time':>9}")
    for name in names:
        r = run(args, name, VARIANTS[name])
        if "error" in r:
            print(f"{name:<28} failed: {r['error']}")
            continue
        cells = "".join(f"{100 * r[k]:>8.1f}" if r[k] is not None else f"{'-':>8}"
                        for k in ("mAP", "rank1", "mAP_ema", "rank1_ema"))
        print(f"{name:<28}{cells}{r['seconds'] / 60:>7.1f}min", flush=True)


if __name__ == "__main__":
    main()
