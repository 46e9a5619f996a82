"""Inputs and dense references that benchmarks share (measurement itself lives in harness.py).

- :func:`make_problem`: clustered query / gallery features with ids and cameras (bench_evaluation,
  bench_rerank: the same generator and seed, so their Euclidean metrics agree);
- :func:`reference_evaluate`: the peers' dense evaluation (bench_evaluation);
- :func:`reference_jaccard`: the peers' dense k-reciprocal Jaccard distance (bench_pseudo_labels).
"""

from __future__ import annotations

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


def make_problem(size: str, seed: int = 0):
    """Random clustered float32 unit features (Q×d, G×d), pids and cameras of query and gallery
    (one centre per id, a per-camera offset, Gaussian noise; ~15 % distractors with pid 0),
    generated in blocks (no full-size temporaries)."""
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
    """The peers' dense evaluation: full Q×G matrix, full argsort, per-query sklearn AP."""
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


def reference_jaccard(x, rank, k1, k2):
    """Dense N×N float32 k-reciprocal Jaccard distance with per-row Python loops (peer form)."""
    import numpy as np

    n = x.shape[0]
    half = int(np.around(k1 / 2))

    def reciprocal(i, k):
        fwd = rank[i, : k + 1]
        back = rank[fwd, : k + 1]
        return fwd[np.where(back == i)[0]]

    s_sets = [reciprocal(i, k1) for i in range(n)]
    c_sets = [reciprocal(i, half) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        s = s_sets[i]
        expanded = s
        for j in s:
            c = c_sets[j]
            if len(np.intersect1d(c, s)) > 2 / 3 * len(c):
                expanded = np.append(expanded, c)
        expanded = np.unique(expanded)
        d = 2 - 2 * (x[expanded] @ x[i])
        w = np.exp(-(d - d.min()))
        v[i, expanded] = w / w.sum()
    del s_sets, c_sets
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = v[rank[i, :k2]].mean(axis=0)
        v = v_qe
        del v_qe
    inv = [np.where(v[:, col] != 0)[0] for col in range(n)]
    dist = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        acc = np.zeros(n, dtype=np.float32)
        cols = np.where(v[i] != 0)[0]
        for col in cols:
            rows = inv[col]
            acc[rows] += np.minimum(v[i, col], v[rows, col])
        dist[i] = 1 - acc / (2 - acc)
    del inv, v
    dist[dist < 0] = 0
    return dist
