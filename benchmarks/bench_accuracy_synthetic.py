"""CC vs DMI on the synthetic dataset: final mAP / rank-1 over several seeds (mean ± std).

    python benchmarks/bench_accuracy_synthetic.py --quick            # smoke preset, ~1-2 min on CPU
    python benchmarks/bench_accuracy_synthetic.py                    # demo preset, seeds 1 2 3
    python benchmarks/bench_accuracy_synthetic.py --seeds 1 2 3 4 5 --epochs 10 --set train.iters=50

Every run is ``dmireid.engine.train(load_config(preset, overrides))`` with ``method=cc|dmi``,
``train.seed=S`` and its own ``output_dir`` in a temporary folder, in a fresh subprocess of this
script (``--worker``), so global torch state (deterministic mode, RNGs, threads) cannot leak from
one run into the next. The preset is read when the runs start: ``demo`` (``smoke`` with
``--quick``); ``--epochs`` and ``--set key=value`` override it, and the resolved settings are
printed. Everything else (data, model, pseudo-label and memory settings) is the preset's and is
identical for both methods.

Reported per method, over seeds: the last epoch's mAP and rank-1 of the online encoder θ and, for
DMI, of the momentum encoder θ' (``mAP_ema`` / ``rank1_ema``), as mean ± sample std, with the
last epoch's cluster count and wall time per run; then one line per run. These are last-epoch
figures, not best-on-test. A run that fails (e.g. DBSCAN finds no clusters for
``train.max_empty_epochs`` epochs) is listed with its error and left out of the means.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

METRICS = [("mAP", "mAP θ"), ("rank1", "R1 θ"), ("mAP_ema", "mAP θ'"), ("rank1_ema", "R1 θ'")]


def overrides_for(args, method: str, seed: int, out_dir: str) -> list[str]:
    values = [f"method={method}", f"train.seed={seed}", f"output_dir={out_dir}", f"device={args.device}"]
    if args.epochs:
        values.append(f"train.epochs={args.epochs}")
    return values + list(args.set)


def worker(preset: str, overrides: list[str], threads: int) -> None:
    import logging

    import torch

    from dmireid.config import load_config
    from dmireid.engine import train
    from dmireid.errors import DmireidError

    if threads:
        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    start = time.perf_counter()
    try:
        result = train(load_config(preset, overrides), progress=False)
        out = {"ok": True, "last": result["last"]}
    except DmireidError as exc:
        out = {"ok": False, "error": str(exc)}
    out["wall_s"] = time.perf_counter() - start
    print(json.dumps(out))


def run_one(args, preset: str, method: str, seed: int, tmp: str) -> dict:
    out_dir = os.path.join(tmp, f"{method}-seed{seed}")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", preset, "--threads", str(args.threads),
           "--overrides", *overrides_for(args, method, seed, out_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"run {method} seed {seed} crashed (exit {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1])
    result.update(method=method, seed=seed)
    return result


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    mean = 100 * statistics.mean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the smoke preset (tiny: ~1-2 minutes on CPU)")
    parser.add_argument("--preset", default=None, help="config preset or YAML path (default demo, smoke with --quick)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", choices=["cc", "dmi"], default=["cc", "dmi"])
    parser.add_argument("--epochs", type=int, default=None, help="train.epochs (default: the preset's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0: torch default)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--keep", metavar="DIR", help="write the run folders here instead of a temporary folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.overrides, args.threads)
        return

    from dmireid.config import load_config

    preset = args.preset or ("smoke" if args.quick else "demo")
    cfg = load_config(preset, overrides_for(args, "dmi", args.seeds[0], "-"))  # validates the overrides early
    d, t, m, p = cfg.data, cfg.train, cfg.model, cfg.pseudo_labels
    print(f"preset {preset}: {d.name} ({d.synthetic_ids} ids, {d.synthetic_cameras} cameras), {m.arch} at "
          f"{d.height}×{d.width}, {t.epochs} epochs × {t.iters} iters, batch {t.batch_size} "
          f"(K = {d.num_instances}), lr {t.lr}, eps {p.eps}, k1 {p.k1}, k2 {p.k2}, min_samples {p.min_samples}, "
          f"dmi: K_mip {cfg.memory.mip_instances}, dcp_updates {cfg.memory.dcp_updates}, "
          f"schedule {t.schedule}; cc: update {cfg.memory.cc_update}; seeds {args.seeds}; device {args.device}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n", flush=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="dmireid-acc-") as tmp:
        root = args.keep or tmp
        for method in args.methods:
            for seed in args.seeds:
                r = run_one(args, preset, method, seed, root)
                results.append(r)
                if r["ok"]:
                    last = r["last"]
                    shown = ", ".join(f"{label} {100 * last[key]:.1f}" for key, label in METRICS if key in last)
                    print(f"{method} seed {seed}: {shown}, clusters {last.get('num_clusters')}, "
                          f"{r['wall_s']:.0f} s", flush=True)
                else:
                    print(f"{method} seed {seed}: FAILED ({r['error']})", flush=True)

    print()
    header = (f"{'method':<8}{'runs':>5}" + "".join(f"{label:>14}" for _, label in METRICS)
              + f"{'clusters':>10}{'s / run':>9}")
    print(header)
    print("-" * len(header))
    for method in args.methods:
        ok = [r for r in results if r["method"] == method and r["ok"]]
        cells = [mean_std([r["last"][key] for r in ok if key in r["last"]]) for key, _ in METRICS]
        clusters = statistics.mean(r["last"].get("num_clusters", 0) for r in ok) if ok else float("nan")
        wall = statistics.mean(r["wall_s"] for r in ok) if ok else float("nan")
        runs = f"{len(ok)}/{len(args.seeds)}"
        print(f"{method:<8}{runs:>5}" + "".join(f"{c:>14}" for c in cells) + f"{clusters:>10.1f}{wall:>9.0f}")
    print("\nlast-epoch figures in %, mean ± sample std over seeds; θ = online encoder, θ' = momentum encoder (dmi)")
    failed = [r for r in results if not r["ok"]]
    if failed:
        print(f"{len(failed)} run(s) failed and are left out of the means")


if __name__ == "__main__":
    main(sys.argv[1:])
