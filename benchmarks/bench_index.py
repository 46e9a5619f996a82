"""Gallery search at 1k / 100k / 1M × 512: dmireid's exact blocked search and its IVF indexes vs a
numpy matmul + argsort baseline, on uniform and identity-structured vectors.

    python benchmarks/bench_index.py                          # 1k, 100k, 1M; uniform and identity
    python benchmarks/bench_index.py --quick                  # 1k and 20k, identity only, < 1 minute
    python benchmarks/bench_index.py --measure-similarity     # the within-identity cosine of a real model

Per gallery size N (d = 512, float32 unit rows), data kind, and one batch of Q = 100 queries, top 10:

- ``numpy``: ``scores = queries @ gallery.T`` then ``np.argsort(-scores, axis=1)[:, :10]`` (a full
  sort, as most re-ID code ranks a gallery) — the baseline, measured in the same run;
- ``exact``: :func:`dmireid.inference.gallery_search.exact_topk`, what ``GalleryIndex.search_vectors``
  runs on an exact index (one sgemm per block of ``--block-size`` rows + argpartition);
- ``ivf-flat`` / ``ivf-sq8``: :func:`dmireid.inference.vector_index.filled`, what ``dmireid index
  build --approximate KIND`` makes (nlist ≈ 4√N, trained on the gallery), at each ``--nprobe``;
  recall@10 against the exact top 10.

Data: ``uniform`` (random unit vectors: no structure, the worst case of any approximate index) and
``identity`` (N / ``--views`` identities, each a random unit centre; each view = centre + Gaussian
noise scaled so that two views of one identity have cosine ``--similarity`` on average; queries are
further views of gallery identities). Times: median of ``--repeats`` batches after a warm-up, at
each ``--threads`` (BLAS via threadpoolctl, faiss via OpenMP). Memory: the process's peak RSS
after the row (numpy's baseline allocates 12 bytes × Q × N for scores and order).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import harness  # noqa: I001  (first: this checkout first on the import path, OMP_WAIT_POLICY before numpy / faiss)
import numpy as np

TOPK = 10
# ASSUMED, not measured: a trained re-ID model's within-identity cosine. --measure-similarity gave, on
# cuhk03_pair1 bounding_box_test (100 identities), for the ImageNet MobileNetV2 (not trained for re-ID)
# 0.747 raw / 0.154 centred (between identities 0.699 / -0.003); measure a trained checkpoint with
# --measure-similarity --checkpoint CKPT and pass --similarity. Measured later on a label-free DMI + tracklets
# bench_real checkpoint (cuhk03_pair1 CPU budget, seed 1, θ' 4.0 mAP): 0.559 raw / 0.450 centred (between 0.186 /
# -0.005): a weak model; a well-trained re-ID model sits higher, hence the 0.80 kept as the default
ASSUMED_SIMILARITY = 0.80


def peak_rss_mb() -> float:
    """This process's peak resident MB so far (never reset here: the peak after the row)."""
    return harness.peak_rss_bytes() / harness.MIB


def timed(fn, repeats: int):
    """``(median seconds, last result)`` of ``repeats`` calls after one warm-up."""
    return harness.median_seconds(fn, repeats, warmup=1)


def machine_line(args) -> str:
    """The harness's machine line, with the thread counts the table's columns run at."""
    return harness.machine_line({**harness.machine(), "threads": ", ".join(map(str, args.threads))})


# ----------------------------------------------------------------------------- data
def normalised(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(kind: str, n: int, d: int, queries: int, views: int, similarity: float, seed: int):
    """``(gallery N×d, queries Q×d)`` float32 unit rows, made in blocks (no N×d temporaries)."""
    rng = np.random.default_rng(seed)
    gallery = np.empty((n, d), dtype=np.float32)
    if kind == "uniform":
        for start in range(0, n, 65536):
            gallery[start:start + 65536] = normalised(rng.standard_normal((min(65536, n - start), d), dtype=np.float32))
        return gallery, normalised(rng.standard_normal((queries, d), dtype=np.float32))
    sigma = np.sqrt(1 / similarity - 1)  # cos(c + σe1, c + σe2) ≈ 1 / (1 + σ²) for |e| ≈ 1
    centres = normalised(rng.standard_normal((max(n // views, 1), d), dtype=np.float32))
    owner = np.arange(n) % len(centres)
    for start in range(0, n, 65536):
        rows = owner[start:start + 65536]
        noise = rng.standard_normal((len(rows), d), dtype=np.float32) * np.float32(sigma / np.sqrt(d))
        gallery[start:start + len(rows)] = normalised(centres[rows] + noise)
    picked = rng.integers(0, len(centres), queries)
    q = centres[picked] + rng.standard_normal((queries, d), dtype=np.float32) * np.float32(sigma / np.sqrt(d))
    return gallery, normalised(q)


def measure_similarity(args) -> None:
    """Within- and between-identity cosine of the ImageNet MobileNetV2 on cuhk03_pair1 (real images)."""
    import torch
    from PIL import Image

    from dmireid import build
    from dmireid.config import load_config
    from dmireid.data import build_test_transform

    root = Path(args.data_root) / "bounding_box_test"
    if not root.is_dir() or not Path(args.weights).is_file():
        raise SystemExit(f"needs {root} and {args.weights} (research data, not in the repository)")
    torch.set_num_threads(2)
    cfg = load_config("smoke", ["model.arch=timm:mobilenetv2_100", f"model.pretrained={args.weights}",
                                "data.height=128", "data.width=64"])
    model = build.model(cfg).eval()  # with the ImageNet weights
    transform = build_test_transform(128, 64)
    files = sorted(root.glob("*.jpg"))
    people = sorted({f.name[:4] for f in files})[:100]
    files = [f for f in files if f.name[:4] in people]
    if args.checkpoint:  # a trained re-ID model (e.g. a bench_real run's last.pt)
        from dmireid.embedding import FeatureExtractor

        feats = FeatureExtractor(args.checkpoint, device="cpu")([str(f) for f in files]).numpy()
    else:
        with torch.no_grad():
            feats = torch.cat([model(torch.stack([transform(Image.open(f).convert("RGB")) for f in files[i:i + 64]]))
                               for i in range(0, len(files), 64)]).flatten(1).numpy()
    pid = np.array([f.name[:4] for f in files])
    same, off = pid[:, None] == pid[None, :], ~np.eye(len(pid), dtype=bool)
    for name, x in (("raw", feats), ("centred", feats - feats.mean(0))):  # centred: the synthetic centres' mean is 0
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sims = x @ x.T
        print(f"{name}: {len(files)} images of {len(people)} identities, d={x.shape[1]}: mean cosine within an "
              f"identity {sims[same & off].mean():.3f}, between identities {sims[~same].mean():.3f}")


# ----------------------------------------------------------------------------- measurement
def numpy_search(gallery, queries):
    scores = queries @ gallery.T
    return np.argsort(-scores, axis=1)[:, :TOPK]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / TOPK for f, t in zip(found.tolist(), truth.tolist())]))


def blas_threads(count: int):
    """A context limiting numpy's BLAS to ``count`` threads (threadpoolctl; without it: unchanged)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        logging.warning("threadpoolctl is not installed: numpy's BLAS threads are not limited")
        return contextlib.nullcontext()
    return threadpool_limits(count)


def bench_row(faiss, n: int, kind: str, args) -> dict:
    threadpool_limits = blas_threads

    from dmireid.inference.gallery_search import exact_topk
    from dmireid.inference.vector_index import approximate_params, filled

    gallery, queries = make_data(kind, n, args.dim, args.queries, args.views, args.similarity, args.seed)
    ids = np.arange(n, dtype=np.int64)
    row = {"n": n, "data": kind, "numpy_s": {}, "exact_s": {}, "approx": []}
    for threads in args.threads:
        with threadpool_limits(threads):
            row["numpy_s"][threads], truth_np = timed(lambda: numpy_search(gallery, queries), args.repeats)
            row["exact_s"][threads], (_, truth) = timed(
                lambda: exact_topk(gallery, ids, queries, TOPK, args.block_size), args.repeats)
    row["exact_equals_numpy"] = recall(truth, truth_np)
    for approx in args.kinds:
        manifest = {"dim": args.dim, **approximate_params(approx, n)}
        start = time.perf_counter()
        with threadpool_limits(max(args.threads)):
            faiss.omp_set_num_threads(max(args.threads))
            index = filled(manifest, ids, gallery)
        entry = {"kind": approx, "nlist": manifest["nlist"], "build_s": time.perf_counter() - start,
                 "peak_rss_mb": peak_rss_mb(), "runs": []}
        for nprobe in args.nprobe:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            run = {"nprobe": nprobe, "s": {}}
            for threads in args.threads:
                faiss.omp_set_num_threads(threads)
                run["s"][threads], (_, found) = timed(lambda: index.search(queries, TOPK, params=params), args.repeats)
            run["recall10"] = recall(found, truth)
            entry["runs"].append(run)
        row["approx"].append(entry)
        del index
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def print_table(rows: list[dict], args) -> None:
    t = args.threads
    head = " ".join(f"{'numpy ' + str(k) + 't':>9} {'exact ' + str(k) + 't':>9} {'ratio':>6}" for k in t)
    line = machine_line(args)
    print(f"\nd={args.dim}, {args.queries} queries per batch, top {TOPK}; seconds per batch (median of {args.repeats}); "
          f"exact block {args.block_size} rows; identity data: {args.views} views per identity, within-identity "
          f"cosine {args.similarity}")
    print(line)
    print(f"{'data':<9}{'N':>9} {head} {'same top10':>10} {'peak MB':>8}")
    for r in rows:
        cells = " ".join(f"{r['numpy_s'][k]:>9.4f} {r['exact_s'][k]:>9.4f} {r['exact_s'][k] / r['numpy_s'][k]:>5.2f}x"
                         for k in t)
        print(f"{r['data']:<9}{r['n']:>9} {cells} {r['exact_equals_numpy']:>10.3f} {r['peak_rss_mb']:>8.0f}")
    print(f"\n{line}")
    print(f"{'data':<9}{'N':>9} {'kind':>9} {'nlist':>6} {'build s':>8} {'nprobe':>6} "
          + " ".join(f"{'s ' + str(k) + 't':>8} {'vs exact':>8}" for k in t) + f" {'recall@10':>9}")
    for r in rows:
        for a in r["approx"]:
            for run in a["runs"]:
                cells = " ".join(f"{run['s'][k]:>8.4f} {r['exact_s'][k] / run['s'][k]:>7.1f}x" for k in t)
                print(f"{r['data']:<9}{r['n']:>9} {a['kind']:>9} {a['nlist']:>6} {a['build_s']:>8.1f} "
                      f"{run['nprobe']:>6} {cells} {run['recall10']:>9.3f}")
    print("\ntargets (identity data, largest N): exact <= 0.5x numpy; approximate recall@10 >= 0.95 at >= 5x exact")
    for r in rows:
        k = min(t)
        good = [(a["kind"], run) for a in r["approx"] for run in a["runs"] if run["recall10"] >= 0.95]
        best = max(good, key=lambda g: r["exact_s"][k] / g[1]["s"][k]) if good else None
        approx = (f"fastest with recall >= 0.95: {best[0]} nprobe {best[1]['nprobe']}, recall "
                  f"{best[1]['recall10']:.3f}, {r['exact_s'][k] / best[1]['s'][k]:.1f}x exact" if best
                  else "no setting reached recall 0.95")
        print(f"  {r['data']} N={r['n']} ({k} thread): exact {r['exact_s'][k] / r['numpy_s'][k]:.3f}x numpy; {approx}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    p.add_argument("--data", nargs="+", choices=["uniform", "identity"], default=["identity", "uniform"])
    p.add_argument("--quick", action="store_true", help="1k and 20k, identity data, 1 thread: < 1 minute")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--block-size", type=int, default=16384)
    p.add_argument("--kinds", nargs="+", default=["ivf-flat", "ivf-sq8"])
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--views", type=int, default=10, help="identity data: gallery views per identity")
    p.add_argument("--similarity", type=float, default=ASSUMED_SIMILARITY)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--measure-similarity", action="store_true")
    p.add_argument("--checkpoint", help="--measure-similarity with this trained checkpoint, not the ImageNet model")
    p.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared/data/cuhk03_pair1"))
    p.add_argument("--weights", default=str(Path(__file__).resolve().parents[2] / "shared/weights/mobilenetv2_100_imagenet.pth"))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.measure_similarity:
        return measure_similarity(args)
    if args.quick:
        args.sizes, args.data, args.threads, args.repeats, args.nprobe = [1000, 20_000], ["identity"], [1], 2, [8, 32]
    import faiss

    print(f"{machine_line(args)}; faiss {faiss.__version__}; numpy {np.__version__}")
    rows = []
    for n in args.sizes:
        for kind in args.data:
            rows.append(bench_row(faiss, n, kind, args))
            print(json.dumps(rows[-1]), flush=True)
    print_table(rows, args)
    print(f"load average at the end {harness.load_average()}")
    if args.json:
        harness.write_json(args.json, rows)


if __name__ == "__main__":
    main()
