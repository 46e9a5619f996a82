"""Microseconds per memory update / loss step: dmireid.memory vs per-sample Python loops.

    python benchmarks/bench_memory_updates.py                    # CPU, and CUDA when available
    python benchmarks/bench_memory_updates.py --device cpu --threads 1 --clusters 700 1100
    python benchmarks/bench_memory_updates.py --quick            # C = 700, d = 512, few repeats (seconds)

Batch B = P×K = 16×16 = 256, d = 2048, K_mip = 16, C clusters. Rows:
  sequential / hard / mean   one ClusterProxies.update (CC rules)
  mip_replace                one MultiInstanceProxies.replace
  dmi_loss_fwd_bwd           L_DCP([hard, mean]) + L_MIP forward and backward to f
The loop references are written here in the usual per-sample style (one small kernel per sample
or per cluster, labels read on the host). Each vectorised result is checked against its
reference before timing.
"""

from __future__ import annotations

import sys

import harness  # noqa: I001  (first: OMP_WAIT_POLICY before torch loads OpenMP)
import torch
import torch.nn.functional as F

from dmireid.memory import ClusterProxies, DiscrepantProxies, MultiInstanceProxies

# ------------------------------------------------------------------------- per-sample references


def loop_sequential(P, f, y, m):
    for x, c in zip(f, y.tolist()):
        P[c] = F.normalize(m * P[c] + (1 - m) * x, dim=0)


def _groups_on_host(f, y):
    groups = {}
    for i, c in enumerate(y.tolist()):
        groups.setdefault(c, []).append(f[i])
    return groups


def loop_hard(P, f, y, m):
    for c, feats in _groups_on_host(f, y).items():
        sims = [float(x @ P[c]) for x in feats]
        x = feats[min(range(len(sims)), key=sims.__getitem__)]
        P[c] = F.normalize(m * P[c] + (1 - m) * x, dim=0)


def loop_mean(P, f, y, m):
    for c, feats in _groups_on_host(f, y).items():
        P[c] = F.normalize(m * P[c] + (1 - m) * torch.stack(feats).mean(0), dim=0)


def loop_replace(Q, f, y, generator):
    K = Q.shape[1]
    for c, feats in _groups_on_host(f, y).items():
        perm = torch.randperm(len(feats), generator=generator).tolist()
        for k in range(K):
            Q[c, k] = feats[perm[k % len(feats)]]


def loop_dmi_loss(P_hard, P_mean, Q, f, y, tau):
    """Per-sample logits and cross-entropy (mean over the batch)."""
    C, K, d = Q.shape
    flat = Q.reshape(C * K, d)
    total = 0.0
    for x, c in zip(f, y.tolist()):
        dcp = 0.5 * (F.cross_entropy((P_hard @ x / tau)[None], torch.tensor([c], device=x.device))
                     + F.cross_entropy((P_mean @ x / tau)[None], torch.tensor([c], device=x.device)))
        s = (flat @ x).view(C, K) / tau
        logits = s.max(1).values.clone()
        logits[c] = s[c].min()
        total = total + dcp + F.cross_entropy(logits[None], torch.tensor([c], device=x.device))
    return total / len(y)


# ------------------------------------------------------------------------- timing


def timeit(fn, device, repeats, warmup=1):
    """Mean µs per call of ``repeats`` calls after ``warmup`` (CUDA synchronised at both ends)."""
    for _ in range(warmup):
        fn()

    def all_calls():
        for _ in range(repeats):
            fn()

    return harness.median_seconds(all_calls, 1, warmup=0, sync=harness.device_sync(device))[0] / repeats * 1e6


def make_batch(C, P, K, d, device, seed):
    g = torch.Generator().manual_seed(seed)
    clusters = torch.randperm(C, generator=g)[:P]
    y = clusters.repeat_interleave(K)
    perm = torch.randperm(len(y), generator=g)  # arbitrary order (exactness does not need K-blocks)
    f = F.normalize(torch.randn(len(y), d, generator=g), dim=1)
    return f[perm].to(device), y[perm].to(device)


def bench(device, C, args):
    d, P, K, Kmip, tau, m = args.dim, args.p, args.k, args.k_mip, 0.05, 0.1
    g = torch.Generator().manual_seed(0)
    centroids = F.normalize(torch.randn(C, d, generator=g), dim=1).to(device)
    instances = F.normalize(torch.randn(C, Kmip, d, generator=g), dim=2).to(device)
    f, y = make_batch(C, P, K, d, device, seed=1)
    rows = []

    for rule, ref in (("sequential", loop_sequential), ("hard", loop_hard), ("mean", loop_mean)):
        mem = ClusterProxies(centroids, rule, momentum=m, temperature=tau)
        P_ref = centroids.clone()
        mem.update(f, y)
        ref(P_ref, f, y, m)
        err = (mem.proxies - P_ref).abs().max().item()
        assert err < 1e-5, (rule, err)
        t_vec = timeit(lambda: mem.update(f, y), device, args.repeats)
        t_loop = timeit(lambda: ref(P_ref, f, y, m), device, args.loop_repeats)
        rows.append((rule, t_vec, t_loop, err))

    mip = MultiInstanceProxies(instances, temperature=tau)
    Q_ref = instances.clone()
    gen = torch.Generator(device=device).manual_seed(0)
    mip.replace(f, y, gen)
    loop_replace(Q_ref, f, y, torch.Generator().manual_seed(0))
    # different random permutations: compare per-cluster slot sums (n == K_mip: a permutation)
    err = (mip.instances.sum(1) - Q_ref.sum(1)).abs().max().item()
    assert err < 1e-4, ("mip_replace", err)
    t_vec = timeit(lambda: mip.replace(f, y, gen), device, args.repeats)
    cpu_gen = torch.Generator().manual_seed(0)
    t_loop = timeit(lambda: loop_replace(Q_ref, f, y, cpu_gen), device, args.loop_repeats)
    rows.append(("mip_replace", t_vec, t_loop, err))

    dcp = DiscrepantProxies(centroids, ("hard", "mean"), momentum=m, temperature=tau)
    dcp.update(f, y)
    mip = MultiInstanceProxies(instances, temperature=tau)
    fv = f.clone().requires_grad_(True)
    fl = f.clone().requires_grad_(True)

    def vec_loss():
        fv.grad = None
        (dcp.loss(fv, y) + mip.loss(fv, y)).backward()

    def ref_loss():
        fl.grad = None
        loop_dmi_loss(dcp.sets[0].proxies, dcp.sets[1].proxies, mip.instances, fl, y, tau).backward()

    vec_loss()
    ref_loss()
    err = (fv.grad - fl.grad).abs().max().item()
    assert err < 1e-5, ("dmi_loss", err)
    t_vec = timeit(vec_loss, device, args.repeats)
    t_loop = timeit(ref_loss, device, max(1, args.loop_repeats // 3), warmup=0)
    rows.append(("dmi_loss_fwd_bwd", t_vec, t_loop, err))
    return rows


COLUMNS = [harness.Column("device", "device"), harness.Column("C", "C"), harness.Column("operation", "operation"),
           harness.Column("vectorised_us", "vectorised µs", ",.0f"), harness.Column("loop_us", "loop µs", ",.0f"),
           harness.Column("speedup", "speedup", ".1f"), harness.Column("max_diff", "max abs diff", ".1e")]


def parser():
    p = harness.arguments(__doc__, threads=0, quick="C = 700, d = 512, 3 / 1 repeats (seconds)")
    p.add_argument("--device", nargs="*", default=None, help="cpu and/or cuda (default: cpu, cuda if present)")
    p.add_argument("--clusters", type=int, nargs="*", default=[700, 1100])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--p", type=int, default=16, help="clusters per batch")
    p.add_argument("--k", type=int, default=16, help="images per cluster")
    p.add_argument("--k-mip", type=int, default=16)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--loop-repeats", type=int, default=3)
    return p


def body(args, report) -> None:
    if args.quick:
        args.clusters, args.dim, args.repeats, args.loop_repeats = [700], 512, 3, 1
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    for name in devices:
        for C in args.clusters:
            for op, t_vec, t_loop, err in bench(torch.device(name), C, args):
                rows.append({"device": name, "C": C, "operation": op, "vectorised_us": t_vec, "loop_us": t_loop,
                             "speedup": t_loop / t_vec, "max_diff": err})
    report.table(f"µs per call, torch {torch.__version__}, B = {args.p}x{args.k}, d = {args.dim}, "
                 f"K_mip = {args.k_mip}", rows, COLUMNS)


if __name__ == "__main__":
    sys.exit(harness.main(body, parser()))
