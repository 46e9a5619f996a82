"""Gallery search: faiss exact / approximate vs a plain numpy matmul + argsort, 1k to 1M vectors.

    python benchmarks/bench_index.py                          # 1k, 100k, 1M × 512, uniform random
    python benchmarks/bench_index.py --sizes 1000 100000 --data clustered
    python benchmarks/bench_index.py --quick                  # 1k and 20k, seconds

Per gallery size N (d = 512, float32 unit rows) and one batch of Q queries (default 100, top 10):

- ``numpy``: ``scores = queries @ gallery.T`` then ``np.argsort(-scores, axis=1)[:, :10]`` — the
  baseline of the issue (a full sort, as most re-ID code ranks a gallery);
- ``exact``: what ``GalleryIndex`` uses, faiss ``IndexIDMap2(IndexFlatIP)``;
- ``hnsw``: the approximate option, ``IndexIDMap2(IndexHNSWFlat(d, M=32, inner product))``,
  efConstruction 80, for each efSearch of ``--ef``; recall@10 against the exact top 10.

Times: the median of ``--repeats`` searches of the batch (after one warm-up). Memory: the bytes the
baseline allocates per batch (scores + argsort output), and the resident-set growth while the
faiss index is built (its vectors + ids + graph). Threads: numpy's BLAS and faiss's OpenMP use what
the environment allows (OMP_NUM_THREADS; printed). Data: ``uniform`` (random unit vectors: the
hardest case for a graph index: no structure) or ``clustered`` (N/8 centres + noise, queries near
centres: nearer to re-ID features). Exact faiss and the baseline find the same top 10 (checked).
"""

from __future__ import annotations

import json
import os
import time

import harness  # noqa: I001  (first: OMP_WAIT_POLICY before numpy / faiss load OpenMP)
import numpy as np
from harness import rss_bytes

TOPK = 10


def unit_rows(rng: np.random.Generator, n: int, d: int, block: int = 65536) -> np.ndarray:
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, block):
        x = rng.standard_normal((min(block, n - start), d), dtype=np.float32)
        out[start:start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def make_data(kind: str, n: int, d: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(gallery N×d, queries Q×d)`` float32 unit rows."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return unit_rows(rng, n, d), unit_rows(rng, queries, d)
    centres = unit_rows(rng, max(n // 8, 1), d)
    gallery = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        x = centres[rng.integers(0, len(centres), stop - start)]
        x = x + 0.8 * rng.standard_normal(x.shape, dtype=np.float32) / np.sqrt(d)
        gallery[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = centres[rng.integers(0, len(centres), queries)]
    q = q + 0.8 * rng.standard_normal(q.shape, dtype=np.float32) / np.sqrt(d)
    return gallery, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def timed(fn, repeats: int):
    """``(median seconds, last result)`` of ``repeats`` calls after one warm-up."""
    return harness.median_seconds(fn, repeats, warmup=1)


def numpy_search(gallery: np.ndarray, queries: np.ndarray):
    scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1)
    return order[:, :TOPK], scores.nbytes + order.nbytes


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / TOPK for f, t in zip(found, truth)]))


def bench_size(faiss, n: int, args) -> dict:
    gallery, queries = make_data(args.data, n, args.dim, args.queries, args.seed)
    ids = np.arange(n, dtype=np.int64)
    row: dict = {"n": n}
    if n <= args.numpy_max:
        row["numpy_s"], (truth_np, row["numpy_bytes"]) = timed(lambda: numpy_search(gallery, queries), args.repeats)
    base = rss_bytes()
    start = time.perf_counter()
    exact = faiss.IndexIDMap2(faiss.IndexFlatIP(args.dim))
    exact.add_with_ids(gallery, ids)
    row["exact_build_s"], row["exact_bytes"] = time.perf_counter() - start, rss_bytes() - base
    row["exact_s"], (_, truth) = timed(lambda: exact.search(queries, TOPK), args.repeats)
    if "numpy_s" in row:
        row["exact_vs_numpy_top10"] = recall(truth, truth_np)  # the same neighbours (ties aside)
    del exact
    base = rss_bytes()
    start = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(args.dim, args.m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = args.ef_construction
    approx = faiss.IndexIDMap2(hnsw)
    approx.add_with_ids(gallery, ids)
    row["hnsw_build_s"], row["hnsw_bytes"] = time.perf_counter() - start, rss_bytes() - base
    row["hnsw"] = []
    for ef in args.ef:
        hnsw.hnsw.efSearch = ef
        seconds, (_, found) = timed(lambda: approx.search(queries, TOPK), args.repeats)
        row["hnsw"].append({"ef": ef, "s": seconds, "recall10": recall(found, truth)})
    del approx, hnsw, gallery
    return row


def print_table(rows: list[dict], args) -> None:
    q = args.queries
    print(f"\nd={args.dim}, {q} queries per batch, top {TOPK}, data {args.data}; times per batch (median of "
          f"{args.repeats}); HNSW M={args.m}, efConstruction={args.ef_construction}")
    print(f"{'N':>9} {'numpy s':>9} {'exact s':>9} {'exact/numpy':>11} {'numpy MB':>9} {'exact MB':>9} "
          f"{'hnsw MB':>8} {'build exact/hnsw s':>19}")
    for r in rows:
        ratio = f"{r['exact_s'] / r['numpy_s']:.3f}x" if "numpy_s" in r else "-"
        numpy_s = f"{r['numpy_s']:.4f}" if "numpy_s" in r else "-"
        numpy_mb = f"{r['numpy_bytes'] / 2**20:.0f}" if "numpy_s" in r else "-"
        print(f"{r['n']:>9} {numpy_s:>9} {r['exact_s']:>9.4f} {ratio:>11} {numpy_mb:>9} "
              f"{r['exact_bytes'] / 2**20:>9.0f} {r['hnsw_bytes'] / 2**20:>8.0f} "
              f"{r['exact_build_s']:>9.1f}/{r['hnsw_build_s']:<9.1f}")
    print(f"\n{'N':>9} {'efSearch':>8} {'hnsw s':>9} {'recall@10':>9} {'speed vs exact':>14}")
    for r in rows:
        for h in r["hnsw"]:
            print(f"{r['n']:>9} {h['ef']:>8} {h['s']:>9.4f} {h['recall10']:>9.3f} {r['exact_s'] / h['s']:>13.1f}x")
    print("\ntargets: exact at <= 0.5x the numpy baseline; approximate recall@10 >= 0.95 at >= 5x exact speed")
    for r in rows:
        good = [h for h in r["hnsw"] if h["recall10"] >= 0.95]
        best = max(good, key=lambda h: r["exact_s"] / h["s"]) if good else None
        exact = f"exact {r['exact_s'] / r['numpy_s']:.3f}x numpy" if "numpy_s" in r else "exact (no baseline)"
        approx = (f"fastest HNSW with recall >= 0.95: efSearch {best['ef']}, recall {best['recall10']:.3f}, "
                  f"{r['exact_s'] / best['s']:.1f}x exact speed" if best else "no efSearch reached recall 0.95")
        print(f"  N={r['n']}: {exact}; {approx}")


def main() -> None:
    p = harness.arguments(__doc__, threads=None, quick="sizes 1000 and 20000", json_path=False)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", choices=["uniform", "clustered"], default="uniform")
    p.add_argument("--m", type=int, default=32, help="HNSW neighbours per node")
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    p.add_argument("--numpy-max", type=int, default=1_000_000, help="largest N for the numpy baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    harness.set_threads(args.threads)
    if args.quick:
        args.sizes = [1000, 20_000]
    import faiss

    print(f"faiss {faiss.__version__}, OpenMP threads {faiss.omp_get_max_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()}")
    rows = []
    for n in args.sizes:
        rows.append(bench_size(faiss, n, args))
        print(json.dumps(rows[-1]), flush=True)
    print(harness.machine_line(harness.machine(args.threads)))
    print_table(rows, args)
    print(f"load average at the end {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
