"""Wall time and peak memory of dmireid.evaluation.evaluate vs the usual dense evaluation.

    python benchmarks/bench_evaluation.py --quick          # small sizes, seconds
    python benchmarks/bench_evaluation.py                  # Market-1501 and MSMT17 test sizes
    python benchmarks/bench_evaluation.py --sizes market --threads 1

Every measurement runs in a fresh subprocess of this script (``--worker ours|reference --size S``)
so that ru_maxrss is the peak of that measurement alone. The worker first generates random
clustered features with a fixed seed (float32, unit rows: one centre per id, a per-camera offset,
Gaussian noise; ~15 % distractors with pid 0), then times one call and prints one JSON line:
wall seconds, peak RSS (includes the Python/torch runtime and the features, whose own size is
printed separately) and the metrics.

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
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SIZES = {  # name: (queries, gallery, dim, ids, cameras, noise)
    "market": (3368, 15913, 2048, 750, 6, 2.3),
    "msmt17": (11659, 82161, 2048, 3060, 15, 2.5),
    "quick": (400, 2000, 256, 100, 6, 1.3),
    "quick-large": (1500, 12000, 256, 400, 15, 1.4),
}
# noise = norm of the per-image Gaussian noise relative to the unit id centre, set per size so the
# metrics land in a trained model's range (Market size: mAP ~0.78, rank-1 ~0.97)
CAMERA_OFFSET = 0.7
DISTRACTORS = 0.15


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make_problem(size: str, seed: int = 0):
    """Random clustered float32 unit features, generated in blocks (no full-size temporaries)."""
    import torch

    nq, ng, dim, ids, cams, noise = SIZES[size]
    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(ids + 1, dim, generator=gen), dim=1)
    offsets = CAMERA_OFFSET * torch.nn.functional.normalize(torch.randn(cams, dim, generator=gen), dim=1)
    q_pids = torch.randint(1, ids + 1, (nq,), generator=gen)
    g_pids = torch.randint(1, ids + 1, (ng,), generator=gen)
    g_pids[torch.rand(ng, generator=gen) < DISTRACTORS] = 0  # pid 0: noise only, no centre
    q_cams = torch.randint(0, cams, (nq,), generator=gen)
    g_cams = torch.randint(0, cams, (ng,), generator=gen)
    centres[0] = 0

    def features(pids, camids):
        out = torch.empty(len(pids), dim)
        for a in range(0, len(pids), 4096):
            b = min(a + 4096, len(pids))
            block = torch.randn(b - a, dim, generator=gen).mul_(noise / dim**0.5)
            block += centres[pids[a:b]] + offsets[camids[a:b]]
            out[a:b] = torch.nn.functional.normalize(block, dim=1)
        return out

    qf, gf = features(q_pids, q_cams), features(g_pids, g_cams)
    return qf, gf, q_pids.numpy(), g_pids.numpy(), q_cams.numpy(), g_cams.numpy()


def reference_evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank=50):
    """The peers' dense evaluation: full matrix, full argsort, per-query sklearn AP."""
    import numpy as np
    from sklearn.metrics import average_precision_score

    from dmireid.evaluation import pairwise_distance

    dist = pairwise_distance(qf, gf).numpy()
    indices = np.argsort(dist, axis=1)
    matches = g_pids[indices] == q_pids[:, np.newaxis]
    aps, inps, cmc = [], [], np.zeros(max_rank)
    for i in range(len(q_pids)):
        valid = (g_pids[indices[i]] != q_pids[i]) | (g_cams[indices[i]] != q_cams[i])
        y_true = matches[i, valid]
        if not y_true.any():
            continue
        y_score = -dist[i][indices[i]][valid]
        aps.append(average_precision_score(y_true, y_score))
        hits = np.flatnonzero(y_true)
        if hits[0] < max_rank:
            cmc[hits[0]:] += 1
        inps.append(len(hits) / (hits[-1] + 1))
    return {"mAP": float(np.mean(aps)), "cmc": cmc / len(aps), "mINP": float(np.mean(inps)),
            "num_valid_queries": len(aps)}


def worker(impl: str, size: str, threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    qf, gf, qp, gp, qc, gc = make_problem(size)
    baseline = peak_rss_mb()
    start = time.perf_counter()
    if impl == "ours":
        from dmireid.evaluation import evaluate

        result = evaluate(qf, gf, qp, gp, qc, gc)
    else:
        result = reference_evaluate(qf, gf, qp, gp, qc, gc)
    wall = time.perf_counter() - start
    print(json.dumps({"impl": impl, "size": size, "wall_s": wall, "peak_rss_mb": peak_rss_mb(),
                      "rss_before_mb": baseline, "features_mb": (qf.numel() + gf.numel()) * 4 / 2**20,
                      "threads": torch.get_num_threads(), "mAP": result["mAP"], "rank1": float(result["cmc"][0]),
                      "mINP": result["mINP"], "num_valid_queries": result["num_valid_queries"]}))


def measure(impl: str, size: str, threads: int | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--size", size]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker {impl}/{size} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), help="compare at these sizes")
    parser.add_argument("--ours-only", nargs="*", choices=sorted(SIZES), help="sizes to run without the reference")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=sorted(SIZES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.size, args.threads)
        return

    compare = args.sizes or (["quick"] if args.quick else ["market"])
    alone = args.ours_only if args.ours_only is not None else (["quick-large"] if args.quick else ["msmt17"])
    rows = []
    for size in compare:
        ours, ref = measure("ours", size, args.threads), measure("reference", size, args.threads)
        rows += [ours, ref]
        print(f"{size}: time ours/reference = {ours['wall_s'] / ref['wall_s']:.3f}; "
              f"peak RSS {ours['peak_rss_mb']:.0f} MB vs {ref['peak_rss_mb']:.0f} MB; "
              f"|ΔmAP| = {abs(ours['mAP'] - ref['mAP']):.2e}, |Δrank1| = {abs(ours['rank1'] - ref['rank1']):.2e}, "
              f"|ΔmINP| = {abs(ours['mINP'] - ref['mINP']):.2e}", flush=True)
    for size in alone:
        rows.append(measure("ours", size, args.threads))
    print()
    header = (f"{'size':<12}{'Q×G×d':>22}{'impl':>11}{'threads':>8}{'wall s':>9}{'peak RSS MB':>13}"
              f"{'before MB':>11}{'features MB':>13}{'mAP':>8}{'R1':>7}{'mINP':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        nq, ng, dim = SIZES[r["size"]][:3]
        print(f"{r['size']:<12}{f'{nq}×{ng}×{dim}':>22}{r['impl']:>11}{r['threads']:>8}{r['wall_s']:>9.2f}"
              f"{r['peak_rss_mb']:>13.0f}{r['rss_before_mb']:>11.0f}{r['features_mb']:>13.0f}"
              f"{r['mAP']:>8.4f}{r['rank1']:>7.3f}{r['mINP']:>7.3f}")


if __name__ == "__main__":
    main()
