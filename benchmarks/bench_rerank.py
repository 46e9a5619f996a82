"""Wall time and peak memory of evaluate(..., rerank=True) at Market-1501 and MSMT17 test sizes.

    python benchmarks/bench_rerank.py --quick             # tiny size, seconds
    python benchmarks/bench_rerank.py                     # Market-1501 and MSMT17 test sizes
    python benchmarks/bench_rerank.py --sizes market --threads 1

Targets (k1 = 20, k2 = 6, λ = 0.3): Market-1501 test size (3,368 query × 15,913 gallery,
d = 2048) within 4 GiB peak RSS; MSMT17 test size (11,659 × 82,161, d = 2048) within 12 GiB,
with its time reported. The dense torchreid / CC form needs (Q+G)² floats per matrix (35 GB per
matrix at MSMT17) and is not run; for the Market size its memory is estimated instead.

Every size runs in a fresh subprocess of this script (``--worker SIZE``) so that its peak RSS
(VmHWM: ``harness.peak_rss_bytes``) is the peak of that measurement alone. The worker records the
RSS right after ``import torch`` (runtime baseline), generates the random clustered unit features of
``problems.make_problem`` (as bench_evaluation: same generator and seed, so the Euclidean metrics
match that benchmark's), records the RSS again, then times one ``evaluate(..., rerank=True)`` call
and reads the peak RSS; only after that it runs the plain Euclidean ``evaluate`` for the mAP without
re-ranking (and its time). It prints one JSON line on stdout; progress (the re-ranker's phase
timings and a heartbeat with the elapsed time and RSS) goes to stderr. The bounds are checked
against the whole process's peak RSS (runtime and features included), the conservative reading; the
table also shows the peak minus the after-``import torch`` baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import harness
from problems import SIZES as PROBLEMS
from problems import make_problem

GIB = harness.GIB
K1, K2, LAMBDA = 20, 6, 0.3
SIZES = {  # name: (bench_evaluation problem, peak-RSS bound in bytes or None)
    "market": ("market", 4 * GIB),
    "msmt17": ("msmt17", 12 * GIB),
    "quick": ("quick", None),
}
# torchreid's re_ranking (the form CC ships) holds these (Q+G)×(Q+G) 4-byte arrays at once during
# its query expansion; the estimate counts only them, so it is a lower bound. Earlier, at its argsort,
# original_dist, V, argsort's int64 result (2 units) and its int32 cast are alive together, and the
# caller's q_q/q_g/g_g input distances (1 unit in all) throughout: a transient peak of ~6 units.
DENSE_MATRICES = ("original_dist (float32)", "V (float32)", "initial_rank (int32)", "V_qe (float32)")


def dense_estimate(size: str) -> tuple[int, int]:
    """(bytes of one (Q+G)² float32 matrix, bytes of the DENSE_MATRICES) for ``size``."""
    nq, ng = PROBLEMS[SIZES[size][0]][:2]
    one = (nq + ng) ** 2 * 4
    return one, one * len(DENSE_MATRICES)


class Heartbeat:
    """Prints the elapsed time and RSS to stderr every ``every`` seconds while a step runs."""

    def __init__(self, label: str, every: float):
        self.label, self.every = label, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            print(f"[{self.label}] {time.perf_counter() - self._start:7.0f} s, RSS {harness.rss_bytes() / GIB:.2f} GiB "
                  f"(peak {harness.peak_rss_bytes() / GIB:.2f} GiB)", file=sys.stderr, flush=True)

    def __enter__(self):
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def worker(size: str, threads: int | None, heartbeat: float) -> None:
    import logging

    import torch

    rss_torch = harness.peak_rss_bytes()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format=f"[{size}] %(message)s", force=True)
    logging.getLogger("dmireid.evaluation.rerank").setLevel(logging.INFO)  # phase timings
    from dmireid.evaluation import evaluate

    problem = SIZES[size][0]
    t = time.perf_counter()
    qf, gf, qp, gp, qc, gc = make_problem(problem)
    print(f"[{size}] features {tuple(qf.shape)} query, {tuple(gf.shape)} gallery generated in "
          f"{time.perf_counter() - t:.1f} s; re-ranking ...", file=sys.stderr, flush=True)
    rss_features = harness.peak_rss_bytes()

    start = time.perf_counter()
    with Heartbeat(size, heartbeat):
        reranked = evaluate(qf, gf, qp, gp, qc, gc, rerank=True, k1=K1, k2=K2, lambda_value=LAMBDA)
    wall = time.perf_counter() - start
    peak = harness.peak_rss_bytes()

    print(f"[{size}] re-ranked evaluation {wall:.1f} s, peak RSS {peak / GIB:.2f} GiB; plain evaluation ...",
          file=sys.stderr, flush=True)
    start = time.perf_counter()
    plain = evaluate(qf, gf, qp, gp, qc, gc)
    wall_plain = time.perf_counter() - start
    bound = SIZES[size][1]
    print(json.dumps({
        "size": size, "num_query": int(qf.shape[0]), "num_gallery": int(gf.shape[0]), "dim": int(qf.shape[1]),
        "threads": torch.get_num_threads(), "wall_s": wall, "wall_plain_s": wall_plain,
        "peak_rss_bytes": peak, "rss_after_torch_bytes": rss_torch, "rss_after_features_bytes": rss_features,
        "features_bytes": (qf.numel() + gf.numel()) * 4, "bound_bytes": bound,
        "within_bound": None if bound is None else peak <= bound,
        "mAP_rerank": reranked["mAP"], "rank1_rerank": float(reranked["cmc"][0]), "mINP_rerank": reranked["mINP"],
        "mAP_plain": plain["mAP"], "rank1_plain": float(plain["cmc"][0]), "mINP_plain": plain["mINP"],
        "num_valid_queries": reranked["num_valid_queries"],
    }))


def measure(size: str, threads: int | None, heartbeat: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", size, "--heartbeat", str(heartbeat)]
    if threads:
        cmd += ["--threads", str(threads)]
    print(f"running {size} in a fresh process ...", file=sys.stderr, flush=True)
    return harness.run_worker(cmd, capture_stderr=False)  # stderr (progress) passes through


def gib(value) -> str:
    return f"{value / GIB:.2f}"


COLUMNS = [harness.Column("size", "size"), harness.Column("shape", "Q×G×d"), harness.Column("threads", "threads"),
           harness.Column("wall_s", "wall s", ".1f"), harness.Column("wall_plain_s", "plain s", ".1f"),
           harness.Column("peak_rss_bytes", "peak GiB", gib), harness.Column("rss_after_torch_bytes", "torch GiB", gib),
           harness.Column("rss_after_features_bytes", "before GiB", gib),
           harness.Column("features_bytes", "feat GiB", gib), harness.Column("above_torch_bytes", "peak-torch", gib),
           harness.Column("bound_bytes", "bound", lambda v: f"{v / GIB:.0f} GiB"),
           harness.Column("within_bound", "ok", lambda v: "yes" if v else "NO"),
           harness.Column("mAP_rerank", "mAP rr", ".4f"), harness.Column("mAP_plain", "mAP", ".4f"),
           harness.Column("rank1_rerank", "R1 rr", ".3f"), harness.Column("rank1_plain", "R1", ".3f")]


def parser():
    p = harness.arguments(__doc__, threads=None, quick="tiny size only (seconds)")
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), help="default: market msmt17")
    p.add_argument("--heartbeat", type=float, default=30.0, help="seconds between progress lines on stderr")
    p.add_argument("--worker", choices=sorted(SIZES), help=argparse.SUPPRESS)
    return p


def body(args, report) -> None:
    if args.worker:
        worker(args.worker, args.threads, args.heartbeat)
        return
    sizes = args.sizes or (["quick"] if args.quick else ["market", "msmt17"])
    rows = [measure(size, args.threads, args.heartbeat) for size in sizes]
    for r in rows:
        r["shape"] = f"{r['num_query']}×{r['num_gallery']}×{r['dim']}"
        r["above_torch_bytes"] = r["peak_rss_bytes"] - r["rss_after_torch_bytes"]
    report.table(f"evaluate(..., rerank=True), k1={K1}, k2={K2}, lambda={LAMBDA}. peak: whole-process peak RSS "
                 "(checked against the bound); torch: RSS after `import torch`; before: RSS after the imports and the "
                 "features, before the timed call; feat: the features' own size; plain: evaluate without re-ranking",
                 rows, COLUMNS, threads=rows[0]["threads"] if rows else None)
    if any(r["size"] == "market" for r in rows):
        one, total = dense_estimate("market")
        nq, ng = PROBLEMS["market"][:2]
        print(f"\ndense reference at the Market size (estimated, not run): N = Q+G = {nq + ng}, one N×N 4-byte "
              f"matrix = {one / GIB:.2f} GiB; torchreid's re_ranking keeps {len(DENSE_MATRICES)} at once "
              f"({', '.join(DENSE_MATRICES)}) = {total / GIB:.2f} GiB at its query expansion (a lower bound: "
              f"with the caller's q_q/q_g/g_g inputs and argsort's int64 result, its transient peak is ~6 "
              f"matrices = {6 * one / GIB:.2f} GiB)")
        report.add(dense_market_estimate_bytes=total)


if __name__ == "__main__":
    sys.exit(harness.main(body, parser()))
