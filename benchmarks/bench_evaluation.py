"""Wall time and peak memory of dmireid.evaluation.evaluate vs the usual dense evaluation.

    python benchmarks/bench_evaluation.py --quick          # small sizes, seconds
    python benchmarks/bench_evaluation.py                  # Market-1501 and MSMT17 test sizes
    python benchmarks/bench_evaluation.py --sizes market --threads 1

Every measurement runs in a fresh subprocess of this script (``--worker ours|reference --size S``)
so that its peak RSS (VmHWM: ``harness.peak_rss_bytes``) is the peak of that measurement alone.
The worker first generates random clustered features with a fixed seed (``problems.make_problem``),
then times one call and prints one JSON line: wall seconds, peak RSS (includes the Python/torch
runtime and the features, whose own size is printed separately) and the metrics.

The reference is what the peers' code does (open-reid / Cluster Contrast ``mean_ap`` +
torchreid-style CMC/mINP): the full Q×G distance matrix, a full argsort of it, then a per-query
loop with ``sklearn.metrics.average_precision_score``. Distances come from the same
``pairwise_distance`` (float32 matmul) for both. MSMT17 size runs ours only: the reference needs
Q×G×(4 + 8 + 1) bytes ≈ 12 GB there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import harness
from problems import SIZES, make_problem, reference_evaluate


def worker(impl: str, size: str, threads: int | None) -> None:
    import torch

    qf, gf, qp, gp, qc, gc = make_problem(size)
    baseline = harness.peak_rss_bytes() / harness.MIB
    start = time.perf_counter()
    if impl == "ours":
        from dmireid.evaluation import evaluate

        result = evaluate(qf, gf, qp, gp, qc, gc)
    else:
        result = reference_evaluate(qf, gf, qp, gp, qc, gc)
    wall = time.perf_counter() - start
    print(json.dumps({"impl": impl, "size": size, "wall_s": wall,
                      "peak_rss_mb": harness.peak_rss_bytes() / harness.MIB, "rss_before_mb": baseline,
                      "features_mb": (qf.numel() + gf.numel()) * 4 / 2**20,
                      "threads": torch.get_num_threads(), "mAP": result["mAP"], "rank1": float(result["cmc"][0]),
                      "mINP": result["mINP"], "num_valid_queries": result["num_valid_queries"]}))


def measure(impl: str, size: str, threads: int | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--size", size]
    if threads:
        cmd += ["--threads", str(threads)]
    return harness.run_worker(cmd)


COLUMNS = [harness.Column("size", "size"), harness.Column("shape", "Q×G×d"), harness.Column("impl", "impl"),
           harness.Column("threads", "threads"), harness.Column("wall_s", "wall s", ".2f"),
           harness.Column("peak_rss_mb", "peak RSS MB", ".0f"), harness.Column("rss_before_mb", "before MB", ".0f"),
           harness.Column("features_mb", "features MB", ".0f"), harness.Column("mAP", "mAP", ".4f"),
           harness.Column("rank1", "R1", ".3f"), harness.Column("mINP", "mINP", ".3f")]


def parser():
    p = harness.arguments(__doc__, threads=None)
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), help="compare at these sizes")
    p.add_argument("--ours-only", nargs="*", choices=sorted(SIZES), help="sizes to run without the reference")
    p.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--size", choices=sorted(SIZES), help=argparse.SUPPRESS)
    return p


def body(args, report) -> None:
    if args.worker:
        worker(args.worker, args.size, args.threads)
        return
    compare = args.sizes or (["quick"] if args.quick else ["market"])
    alone = args.ours_only if args.ours_only is not None else (["quick-large"] if args.quick else ["msmt17"])
    rows = []
    for size in compare:
        ours, ref = measure("ours", size, args.threads), measure("reference", size, args.threads)
        rows += [ours, ref]
        ratio = ours["wall_s"] / ref["wall_s"]
        report.add(**{f"time_ratio_{size}": ratio})
        print(f"{size}: time ours/reference = {ratio:.3f}; "
              f"peak RSS {ours['peak_rss_mb']:.0f} MB vs {ref['peak_rss_mb']:.0f} MB; "
              f"|ΔmAP| = {abs(ours['mAP'] - ref['mAP']):.2e}, |Δrank1| = {abs(ours['rank1'] - ref['rank1']):.2e}, "
              f"|ΔmINP| = {abs(ours['mINP'] - ref['mINP']):.2e}", flush=True)
    for size in alone:
        rows.append(measure("ours", size, args.threads))
    for r in rows:
        r["shape"] = "×".join(str(v) for v in SIZES[r["size"]][:3])
    report.table("dmireid.evaluation.evaluate vs the dense reference (wall s of the call; peak RSS of its process)",
                 rows, COLUMNS, threads=rows[0]["threads"] if rows else None)


if __name__ == "__main__":
    sys.exit(harness.main(body, parser()))
