"""Pseudo-label step benchmark: sparse k-reciprocal Jaccard + DBSCAN vs the dense peer algorithm.

    python benchmarks/bench_pseudo_labels.py [--quick] [--sizes N[:d] ...] [--eps 0.6]
    python benchmarks/bench_pseudo_labels.py --ranks 2 --sizes 32621      # kNN split over 2 processes

Every measurement runs in a fresh subprocess (``--worker``) that prints one JSON line: wall time
and peak RSS per phase (kNN, Jaccard = every post-kNN step, DBSCAN). Peak RSS per phase comes
from ``VmHWM`` of /proc/self/status, reset before each phase through /proc/self/clear_refs where
the kernel allows it (otherwise the process peak so far): ``harness.PeakRSS``.

Features are synthetic but shaped like re-ID embeddings: L2-normalised, a shared positive mean
direction (ReLU-like features are never orthogonal), identities of ~17 images, identities in
groups of look-alikes, so that only about 1 % of pairs (at N = 12,936) have a Jaccard distance
< 1; the measured fraction is printed.

Variants per size: ``ours`` (max_distance=None), ``ours-eps`` (max_distance=eps), ``reference``
(dense N×N float32 V and Jaccard with per-row Python loops, the algorithm SpCL / Cluster Contrast
ship, re-implemented here; skipped where it would not fit in memory) and, at the largest size,
``ours-hnsw`` (approximate faiss HNSW kNN: recall@k1 and ARI of its DBSCAN labels vs exact).

Targets: post-kNN ≤ 0.1× reference at N = 32,621; whole step ≤ 0.6×; peak memory with
max_distance=eps ≤ 0.1× the reference's; N = 200,000 (d = 128) peak < 8 GiB.

``--ranks R`` (R > 1) runs instead, per size, the labeler's step (kNN split by rows over the
ranks with :func:`~dmireid.pseudo_labels.knn_lists_sharded`, then Jaccard with
``max_distance=eps`` and DBSCAN on rank 0, labels broadcast) once as 1 process and once as R
gloo processes (``torch.distributed.run --standalone``), each with ``--threads`` threads (1), and
prints both kNN times (rank 0's wall: its shard, the wait for the others and the gather), the
whole step, their ratios and whether the labels are identical. Target: kNN ≤ 0.6× with 2 ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import harness
from problems import reference_jaccard

# generator constants: identity spread within a look-alike group, image noise, camera shift
ID_SPREAD, NOISE, CAM = 0.75, 0.8, 0.4
FULL_SIZES = ["12936:2048", "32621:2048", "200000:128"]
QUICK_SIZES = ["4000:128"]  # every variant once, ~15 s
REFERENCE_MAX_N = 40000  # ~9 GB at 32,621 (three dense N×N float32 matrices at the peak)


# ----------------------------------------------------------------------------------------------
# features
def make_features(n: int, d: int, seed: int = 0, per_id: int = 17, group: int = 8):
    """Unit re-ID-like features (float32 N×d) and their identity labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_ids = max(1, round(n / per_id))
    n_groups = max(1, n_ids // group)

    def unit(a):
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    mean = unit(rng.standard_normal(d))
    groups = unit(rng.standard_normal((n_groups, d)))
    cams = unit(rng.standard_normal((6, d))).astype(np.float32)
    id_group = rng.integers(0, n_groups, n_ids)
    ids = unit(0.45 * mean + groups[id_group] + ID_SPREAD * unit(rng.standard_normal((n_ids, d))))
    ids = ids.astype(np.float32)
    id_noise = (NOISE * rng.uniform(0.7, 1.3, n_ids)).astype(np.float32)
    labels = np.concatenate([np.arange(n_ids), rng.integers(0, n_ids, max(0, n - n_ids))])[:n]
    rng.shuffle(labels)
    cam = rng.integers(0, 6, n)
    x = np.empty((n, d), dtype=np.float32)
    step = 2048
    for s in range(0, n, step):
        lab = labels[s : s + step]
        noise = unit(rng.standard_normal((len(lab), d), dtype=np.float32))
        noise *= id_noise[lab, None]
        noise += ids[lab]
        noise += CAM * cams[cam[s : s + step]]
        x[s : s + step] = unit(noise)
    return x, labels


# ----------------------------------------------------------------------------------------------
# worker
def worker(args) -> dict:
    import faiss
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    import sklearn.cluster  # noqa: F401  (imported once by a training process; not timed)
    import sklearn.metrics  # noqa: F401

    from dmireid.pseudo_labels import cluster, label_quality
    from dmireid.pseudo_labels.jaccard import jaccard_from_rank
    from dmireid.pseudo_labels.neighbours import as_features
    from dmireid.pseudo_labels.sharded import knn_lists

    x, labels = make_features(args.n, args.d, seed=args.seed)
    out = {"variant": args.variant, "n": args.n, "d": args.d, "k1": args.k1, "k2": args.k2,
           "eps": args.eps, "threads": args.threads, "phases": {}}
    import gc

    gc.collect()
    out["baseline_rss_mib"] = harness.rss_bytes() / harness.MIB  # after imports and features, before the step
    per_phase = True

    def phase(name, fn):
        nonlocal per_phase
        with harness.PeakRSS() as peak, harness.Timer() as clock:
            result = fn()
        per_phase = per_phase and peak.isolated
        out["phases"][name] = {"wall_s": clock.seconds, "peak_rss_mib": peak.bytes / harness.MIB}
        return result

    if args.variant == "reference":
        def ref_knn():
            index = faiss.IndexFlatIP(x.shape[1])  # the peers' exact search, k = k1
            index.add(x)
            return index.search(x, args.k1)[1]

        rank = phase("knn", ref_knn)
        dist = phase("jaccard", lambda: reference_jaccard(x, rank, args.k1, args.k2))
        out["fraction_lt1"] = float((dist < 1).sum()) / float(args.n) ** 2
        from sklearn.cluster import DBSCAN

        labels_pred = phase("dbscan", lambda: DBSCAN(eps=args.eps, min_samples=4, metric="precomputed",
                                                    n_jobs=1).fit_predict(dist))
    else:
        backend = "faiss-hnsw" if args.variant == "ours-hnsw" else args.backend
        rank_dist, rank = phase("knn", lambda: knn_lists(as_features(x), args.k1, backend=backend))
        max_d = args.eps if args.variant == "ours-eps" else None
        graph = phase("jaccard", lambda: jaccard_from_rank(x, rank, args.k1, args.k2, max_distance=max_d,
                                                           rank_dist=rank_dist))
        out["stored_pairs"] = int(graph.nnz)
        if max_d is None:
            out["fraction_lt1"] = graph.nnz / float(args.n) ** 2
        labels_pred = phase("dbscan", lambda: cluster(graph, eps=args.eps))
        if args.variant == "ours-hnsw":
            exact_dist, exact = knn_lists(as_features(x), args.k1, backend="faiss")
            hits = (np.sort(rank, axis=1)[:, :, None] == np.sort(exact, axis=1)[:, None, :]).any(2).sum()
            out["recall_at_k1"] = float(hits) / exact.size
            graph_exact = jaccard_from_rank(x, exact, args.k1, args.k2, max_distance=args.eps, rank_dist=exact_dist)
            from sklearn.metrics import adjusted_rand_score

            out["ari_vs_exact"] = float(adjusted_rand_score(cluster(graph_exact, eps=args.eps), labels_pred))
    out["per_phase_peaks"] = per_phase
    out["total_wall_s"] = sum(p["wall_s"] for p in out["phases"].values())
    # peak of the step: the phase maxima (without per-phase reset each is the process peak so far)
    out["peak_rss_mib"] = max(p["peak_rss_mib"] for p in out["phases"].values())
    out["clusters"] = int(labels_pred.max()) + 1
    out["outliers"] = int((labels_pred < 0).sum())
    out["label_quality"] = label_quality(labels_pred, labels)
    if args.labels_out:
        np.save(args.labels_out, labels_pred)
    return out


def sharded_worker(args) -> dict | None:
    """The labeler's step on this process's share of the ranks (torchrun) or alone; rank 0 reports."""
    import faiss
    import numpy as np
    import torch
    import torch.distributed as td

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    import sklearn.cluster  # noqa: F401  (imported once by a training process; not timed)

    from dmireid import distributed as dist
    from dmireid.pseudo_labels import cluster, label_quality
    from dmireid.pseudo_labels.jaccard import jaccard_from_rank
    from dmireid.pseudo_labels.neighbours import as_features
    from dmireid.pseudo_labels.sharded import knn_lists_sharded, shard_bounds

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        td.init_process_group("gloo")
    rank, world = dist.rank(), dist.world_size()
    x, labels = make_features(args.n, args.d, seed=args.seed)
    xt = as_features(x)
    out = {"variant": f"{world} proc", "n": args.n, "d": args.d, "k1": args.k1, "k2": args.k2, "eps": args.eps,
           "threads": args.threads, "ranks": world, "phases": {}}
    out["baseline_rss_mib"] = harness.rss_bytes() / harness.MIB

    def phase(name, fn):
        with harness.PeakRSS() as peak, harness.Timer() as clock:
            result = fn()
        out["phases"][name] = {"wall_s": clock.seconds, "peak_rss_mib": peak.bytes / harness.MIB}
        return result

    dist.barrier()
    start = time.perf_counter()
    rank_dist, rank_lists = phase("knn", lambda: knn_lists_sharded(xt, args.k1, backend=args.backend))
    knn_walls = dist.all_gather_cat(torch.tensor([out["phases"]["knn"]["wall_s"]], dtype=torch.float64)).tolist()
    found = torch.zeros(args.n, dtype=torch.int64)
    if rank == 0:
        graph = phase("jaccard", lambda: jaccard_from_rank(x, rank_lists, args.k1, args.k2, max_distance=args.eps,
                                                           rank_dist=rank_dist))
        found = torch.from_numpy(phase("dbscan", lambda: cluster(graph, eps=args.eps)))
    labels_pred = dist.broadcast(found).numpy()
    whole = time.perf_counter() - start
    dist.cleanup()
    if rank != 0:
        return None
    out["knn_wall_per_rank_s"] = knn_walls
    out["rows_per_rank"] = [e - s for s, e in (shard_bounds(args.n, r, world) for r in range(world))]
    out["total_wall_s"] = whole
    out["peak_rss_mib"] = max(p["peak_rss_mib"] for p in out["phases"].values())
    out["clusters"] = int(labels_pred.max()) + 1
    out["outliers"] = int((labels_pred < 0).sum())
    out["label_quality"] = label_quality(labels_pred, labels)
    if args.labels_out:
        np.save(args.labels_out, labels_pred)
    return out


def compare_ranks(n, d, args) -> list[dict]:
    """1 process vs ``args.ranks`` processes on the same features; prints times and ratios."""
    import numpy as np

    tmp = tempfile.mkdtemp(prefix="bench_pl_ranks_")
    rows = {}
    for ranks in (1, args.ranks):
        r = run_worker("sharded", n, d, args, labels_out=os.path.join(tmp, f"{ranks}.npy"), ranks=ranks)
        if r is None:
            shutil.rmtree(tmp, ignore_errors=True)
            return list(rows.values())
        rows[ranks] = r
        walls = ", ".join(f"{w:.2f}" for w in r["knn_wall_per_rank_s"])
        print(fmt(r) + f"  kNN wall per rank [{walls}] s, rows per rank {r['rows_per_rank']}", flush=True)
    one, many = rows[1], rows[args.ranks]
    same = bool((np.load(os.path.join(tmp, "1.npy")) == np.load(os.path.join(tmp, f"{args.ranks}.npy"))).all())
    knn_ratio = many["phases"]["knn"]["wall_s"] / one["phases"]["knn"]["wall_s"]
    whole_ratio = many["total_wall_s"] / one["total_wall_s"]
    print(f"  {args.ranks} processes vs 1 ({args.threads} thread(s) each): kNN {many['phases']['knn']['wall_s']:.2f} s "
          f"vs {one['phases']['knn']['wall_s']:.2f} s = {knn_ratio:.3f}x (target <= 0.6x), whole step "
          f"{many['total_wall_s']:.2f} s vs {one['total_wall_s']:.2f} s = {whole_ratio:.3f}x; "
          f"labels identical: {same}", flush=True)
    many["knn_ratio_vs_1"], many["whole_ratio_vs_1"], many["labels_identical_to_1"] = knn_ratio, whole_ratio, same
    shutil.rmtree(tmp, ignore_errors=True)
    return [one, many]


# ----------------------------------------------------------------------------------------------
# driver
def run_worker(variant, n, d, args, labels_out=None, ranks=1) -> dict | None:
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    # (option names that no torchrun option starts with: its parser would claim "--n")
    cmd = [*launcher, os.path.abspath(__file__), "--worker", variant, "--rows", str(n), "--dims", str(d),
           "--k1", str(args.k1), "--k2", str(args.k2), "--eps", str(args.eps), "--threads", str(args.threads),
           "--seed", str(args.seed), "--backend", args.backend]
    if labels_out:
        cmd += ["--labels-out", labels_out]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(args.threads))
    done = harness.run_process(cmd, env=env)
    if done.returncode != 0:
        print(f"  {variant} N={n}: worker failed (exit {done.returncode})\n{done.stderr[-2000:]}", flush=True)
        return None
    row = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    return {**row, "process_peak_rss_mib": done.peak_rss_bytes / harness.MIB}


def fmt(r) -> str:
    ph = r["phases"]
    cells = "  ".join(f"{k} {v['wall_s']:7.2f}s/{v['peak_rss_mib']:7.0f}MiB" for k, v in ph.items())
    q = r["label_quality"]
    extra = f"  clusters {r['clusters']} outliers {r['outliers']} ARI(true) {q['ari']:.3f}"
    if "recall_at_k1" in r:
        extra += f"  recall@k1 {r['recall_at_k1']:.4f} ARI(vs exact) {r['ari_vs_exact']:.4f}"
    return (f"  {r['variant']:10s} total {r['total_wall_s']:8.2f}s peak {r['peak_rss_mib']:7.0f}MiB "
            f"(baseline {r['baseline_rss_mib']:.0f}) | {cells}"
            + extra)


COLUMNS = [harness.Column("n", "N"), harness.Column("d", "d"), harness.Column("variant", "variant"),
           harness.Column("knn_s", "kNN s", ".2f"), harness.Column("jaccard_s", "Jaccard s", ".2f"),
           harness.Column("dbscan_s", "DBSCAN s", ".2f"), harness.Column("total_wall_s", "total s", ".2f"),
           harness.Column("peak_rss_mib", "peak MiB", ".0f"), harness.Column("baseline_rss_mib", "baseline MiB", ".0f"),
           harness.Column("clusters", "clusters"), harness.Column("outliers", "outliers")]


def parser():
    p = harness.arguments(__doc__, threads=1)
    p.add_argument("--sizes", nargs="+", help="N or N:d entries (default: the full or quick set)")
    p.add_argument("--eps", type=float, default=0.6)
    p.add_argument("--k1", type=int, default=30)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ranks", type=int, default=1,
                   help="R > 1: compare the labeler's step as 1 process vs R processes (kNN split by rows)")
    p.add_argument("--backend", default="faiss", help="kNN backend of our variants (faiss, torch)")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--no-hnsw", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--rows", dest="n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dims", dest="d", type=int, help=argparse.SUPPRESS)
    p.add_argument("--labels-out", help=argparse.SUPPRESS)
    return p


def body(args, report):
    if args.worker:
        args.variant = args.worker
        result = sharded_worker(args) if args.worker == "sharded" else worker(args)
        if result is not None:  # rank 0 (or the only process) reports
            print(json.dumps(result), flush=True)
        return 0
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    parsed = []
    for s in sizes:
        n, _, d = s.partition(":")
        parsed.append((int(n), int(d or 2048)))
    results = []
    largest = max(n for n, _ in parsed)
    for n, d in parsed:
        if args.ranks > 1:
            print(f"N={n} d={d} (k1={args.k1}, k2={args.k2}, eps={args.eps}, backend={args.backend}, "
                  f"threads={args.threads} per process)", flush=True)
            results += compare_ranks(n, d, args)
            continue
        print(f"N={n} d={d} (k1={args.k1}, k2={args.k2}, eps={args.eps}, threads={args.threads})", flush=True)
        variants = ["ours", "ours-eps"]
        if not args.no_reference and n <= REFERENCE_MAX_N:
            variants.append("reference")
        if not args.no_hnsw and n == largest:
            variants.append("ours-hnsw")
        row = {}
        tmp = tempfile.mkdtemp(prefix="bench_pl_")
        for v in variants:
            r = run_worker(v, n, d, args, labels_out=os.path.join(tmp, f"{v}.npy"))
            if r is None:
                continue
            row[v] = r
            results.append(r)
            print(fmt(r), flush=True)
        if "ours" in row:
            print(f"  fraction of pairs with Jaccard < 1: {row['ours']['fraction_lt1']:.4%}")
        if "ours" in row and "reference" in row:
            o, rf = row["ours"], row["reference"]
            post = o["phases"]["jaccard"]["wall_s"] / rf["phases"]["jaccard"]["wall_s"]
            whole = o["total_wall_s"] / rf["total_wall_s"]
            def above(r):  # peak RSS above the worker's baseline (interpreter, torch, faiss, features)
                return max(r["peak_rss_mib"] - r["baseline_rss_mib"], 1e-9)

            print(f"  ratios ours/reference: post-kNN time {post:.3f}x  whole step {whole:.3f}x  "
                  f"peak memory {o['peak_rss_mib'] / rf['peak_rss_mib']:.3f}x "
                  f"(above baseline {above(o) / above(rf):.3f}x)", flush=True)
            if "ours-eps" in row:
                e = row["ours-eps"]
                print(f"  with max_distance=eps: peak memory {e['peak_rss_mib'] / rf['peak_rss_mib']:.3f}x "
                      f"(above baseline {above(e) / above(rf):.3f}x)  whole step "
                      f"{e['total_wall_s'] / rf['total_wall_s']:.3f}x  post-kNN "
                      f"{e['phases']['jaccard']['wall_s'] / rf['phases']['jaccard']['wall_s']:.3f}x", flush=True)
            import numpy as np

            lo, lr = np.load(os.path.join(tmp, "ours.npy")), np.load(os.path.join(tmp, "reference.npy"))
            print(f"  DBSCAN labels identical to the reference: {bool((lo == lr).all())} "
                  f"({int((lo != lr).sum())} of {len(lo)} differ)", flush=True)
            o["labels_identical_to_reference"] = bool((lo == lr).all())
        shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        r.update({f"{k.lower()}_s": v["wall_s"] for k, v in r["phases"].items()})
    report.table(f"pseudo-label step per variant (k1={args.k1}, k2={args.k2}, eps={args.eps}; peak: the phases' "
                 "maximum VmHWM of the worker)", results, COLUMNS)
    report.add(results=results)
    return 0


if __name__ == "__main__":
    sys.exit(harness.main(body, parser()))
