"""CC vs DMI on the synthetic dataset: final mAP / rank-1 over several seeds (mean ± std).

    python benchmarks/bench_accuracy_synthetic.py --quick            # smoke preset, seed 1 (~20 s on CPU)
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
import sys
import tempfile
import time

import harness

METRICS = [("mAP", "mAP θ"), ("rank1", "R1 θ"), ("mAP_ema", "mAP θ'"), ("rank1_ema", "R1 θ'")]


def overrides_for(args, method: str, seed: int, out_dir: str) -> list[str]:
    values = [f"method={method}", f"train.seed={seed}", f"output_dir={out_dir}", f"device={args.device}"]
    if args.epochs:
        values.append(f"train.epochs={args.epochs}")
    return values + list(args.set)


def worker(preset: str, overrides: list[str]) -> None:
    from dmireid.config import load_config
    from dmireid.engine import train
    from dmireid.errors import DmireidError

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
    result = harness.run_worker(cmd)
    result.update(method=method, seed=seed)
    return result


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    mean = 100 * statistics.mean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def parser():
    p = harness.arguments(__doc__, threads=0, quick="the smoke preset, seed 1 (~20 s on CPU)")
    p.add_argument("--preset", default=None, help="config preset or YAML path (default demo, smoke with --quick)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 1 2 3 (--quick: 1)")
    p.add_argument("--methods", nargs="+", choices=["cc", "dmi"], default=["cc", "dmi"])
    p.add_argument("--epochs", type=int, default=None, help="train.epochs (default: the preset's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    p.add_argument("--keep", metavar="DIR", help="write the run folders here instead of a temporary folder")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--overrides", nargs="*", default=[], help=argparse.SUPPRESS)
    return p


def body(args, report) -> None:
    if args.worker:
        worker(args.worker, args.overrides)
        return
    from dmireid.config import load_config

    args.seeds = args.seeds or ([1] if args.quick else [1, 2, 3])
    preset = args.preset or ("smoke" if args.quick else "demo")
    cfg = load_config(preset, overrides_for(args, "dmi", args.seeds[0], "-"))  # validates the overrides early
    d, t, m, p = cfg.data, cfg.train, cfg.model, cfg.pseudo_labels
    print(f"preset {preset}: {d.name} ({d.options.get('num_ids')} ids, {d.options.get('num_cameras')} cameras), "
          f"{m.arch} at {d.height}×{d.width}, {t.epochs} epochs × {t.iters} iters, batch {t.batch_size} "
          f"(K = {d.num_instances}), lr {t.lr}, eps {p.eps}, k1 {p.k1}, k2 {p.k2}, min_samples {p.min_samples}, "
          f"dmi: K_mip {cfg.memory.mip_instances}, dcp_updates {cfg.memory.dcp_updates}, "
          f"schedule {t.schedule}; cc: update {cfg.memory.cc_update}; seeds {args.seeds}; device {args.device}")

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

    rows = []
    for method in args.methods:
        ok = [r for r in results if r["method"] == method and r["ok"]]
        row = {key: mean_std([r["last"][key] for r in ok if key in r["last"]]) for key, _ in METRICS}
        row.update(method=method, runs=f"{len(ok)}/{len(args.seeds)}",
                   clusters=statistics.mean(r["last"].get("num_clusters", 0) for r in ok) if ok else None,
                   wall=statistics.mean(r["wall_s"] for r in ok) if ok else None)
        rows.append(row)
    columns = [harness.Column("method", "method"), harness.Column("runs", "runs"),
               *(harness.Column(key, label) for key, label in METRICS),
               harness.Column("clusters", "clusters", ".1f"), harness.Column("wall", "s / run", ".0f")]
    report.table("last-epoch figures in %, mean ± sample std over seeds; θ = online encoder, θ' = momentum encoder "
                 "(dmi)", rows, columns)
    report.add(runs=results)
    failed = [r for r in results if not r["ok"]]
    if failed:
        print(f"{len(failed)} run(s) failed and are left out of the means")


if __name__ == "__main__":
    sys.exit(harness.main(body, parser()))
