"""Parity of the sparse k-reciprocal re-ranker with a dense reference of Zhong et al. (CVPR 2017).

The reference follows the paper's algorithm in the form torchreid / Cluster Contrast ship (spec §6,
"Re-ranking at test time"), written here with dense (Q+G)×(Q+G) float64 matrices and Python loops:
squared Euclidean distances among all images, squared again and divided by the row maximum,
neighbour lists from a stable full sort of each row, k-reciprocal sets over k1 + 1 entries,
expansion over round(k1/2) + 1 entries tested against the original set, exp(−d) weights, query
expansion over k2 rows, Jaccard (negatives clipped as in spec §3), λ-mix.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dmireid.errors import DmireidError  # noqa: E402
from dmireid.evaluation.rerank import KReciprocalReranker  # noqa: E402

torch.set_num_threads(1)


def features(n, d, n_ids, seed, dup=0, near=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_ids, d))
    x = centers[rng.integers(0, n_ids, n)] + 0.8 * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float32)
    if dup:
        x[rng.choice(n, dup, replace=False)] = x[rng.choice(n, dup, replace=False)]
    if near:
        dst, src = rng.choice(n, near, replace=False), rng.choice(n, near, replace=False)
        x[dst] = x[src] + (1e-7 * rng.normal(size=(near, d))).astype(np.float32)
    return x


def ref_rerank(qf, gf, k1, k2, lam):
    x = np.concatenate([qf, gf]).astype(np.float64)
    nq, n = len(qf), len(qf) + len(gf)
    dist = np.empty((n, n))
    for s in range(0, n, 32):
        diff = x[s : s + 32, None, :] - x[None, :, :]
        dist[s : s + 32] = (diff * diff).sum(axis=2)
    original = dist**2
    original /= original.max(axis=1, keepdims=True)
    rank = np.argsort(original, axis=1, kind="stable")

    def reciprocal(i, k):
        forward = rank[i, : k + 1]
        return [j for j in forward if i in rank[j, : k + 1]]

    half = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for i in range(n):
        s = reciprocal(i, k1)
        expanded = list(s)
        for j in s:
            c = reciprocal(j, half)
            if len(set(c) & set(s)) > 2 / 3 * len(c):
                expanded += c
        idx = np.unique(np.array(expanded, dtype=np.int64))
        if len(idx):
            w = np.exp(-original[i, idx])
            v[i, idx] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.ones((nq, n))
    for i in range(nq):
        cols = np.flatnonzero(v[i])
        m = np.minimum(v[i, cols][None, :], v[:, cols]).sum(axis=1)
        jaccard[i] = np.maximum(1 - m / (2 - m), 0)
    final = (1 - lam) * jaccard + lam * original[:nq]
    return final[:, nq:]


CASES = [
    # Q, G, d, ids, seed, k1, k2, lambda, duplicates, near-duplicates
    (30, 120, 16, 20, 0, 20, 6, 0.3, 0, 0),
    (40, 200, 33, 25, 1, 20, 6, 0.3, 12, 12),
    (25, 150, 12, 15, 2, 7, 3, 0.5, 30, 0),
    (20, 90, 8, 10, 3, 10, 1, 0.3, 0, 10),
    (3, 10, 8, 3, 4, 20, 6, 0.3, 0, 0),  # fewer images than k1 + 1
    (35, 140, 24, 20, 5, 25, 30, 0.0, 6, 0),  # k2 > k1 + 1 and lambda 0
    (30, 100, 16, 12, 6, 20, 6, 1.0, 0, 0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"Q{c[0]}-G{c[1]}-k{c[5]}-{c[6]}-l{c[7]}")
def test_parity_with_dense_reference(case):
    nq, ng, d, ids, seed, k1, k2, lam, dup, near = case
    x = features(nq + ng, d, ids, seed, dup, near)
    qf, gf = x[:nq], x[nq:]
    ref = ref_rerank(qf, gf, k1, k2, lam)
    rr = KReciprocalReranker(qf, gf, k1=k1, k2=k2, lambda_value=lam)
    out = rr.distance_rows(0, nq)
    assert out.dtype == np.float32 and out.shape == (nq, ng)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_chunks_tensors_and_block_sizes_agree():
    x = features(260, 20, 30, 7, dup=8, near=8)
    qf, gf = x[:60], x[60:]
    whole = KReciprocalReranker(qf, gf).distance_rows(0, 60)
    rr = KReciprocalReranker(torch.from_numpy(qf), torch.from_numpy(gf), block_size=37, progress=False)
    parts = np.concatenate([rr.distance_rows(s, min(s + 7, 60)) for s in range(0, 60, 7)])
    np.testing.assert_allclose(parts, whole, atol=1e-6, rtol=0)
    assert rr.distance_rows(5, 5).shape == (0, 200)
    np.testing.assert_allclose(whole, ref_rerank(qf, gf, 20, 6, 0.3), atol=1e-5, rtol=0)


def test_errors():
    x = features(50, 8, 5, 8)
    with pytest.raises(DmireidError, match="dimensions"):
        KReciprocalReranker(x[:10], x[10:, :4])
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(DmireidError, match="query_features"):
        KReciprocalReranker(bad[:10], x[10:])
    with pytest.raises(DmireidError, match="lambda_value"):
        KReciprocalReranker(x[:10], x[10:], lambda_value=1.5)
    with pytest.raises(DmireidError, match="k1"):
        KReciprocalReranker(x[:10], x[10:], k1=0)
    rr = KReciprocalReranker(x[:10], x[10:])
    with pytest.raises(DmireidError, match="outside"):
        rr.distance_rows(5, 11)


def test_evaluate_with_rerank_uses_these_distances():
    """Integration with the streaming evaluator: ``evaluate(rerank=True)`` ranks by our rows."""
    evaluation = pytest.importorskip("dmireid.evaluation")
    evaluate = getattr(evaluation, "evaluate", None)
    if evaluate is None:
        pytest.skip("dmireid.evaluation.evaluate not available")
    rng = np.random.default_rng(9)
    x = features(160, 16, 20, 9)
    qf, gf = torch.from_numpy(x[:40]), torch.from_numpy(x[40:])
    qp, gp = torch.from_numpy(rng.integers(1, 20, 40)), torch.from_numpy(rng.integers(1, 20, 120))
    qc, gc = torch.zeros(40, dtype=torch.int64), torch.ones(120, dtype=torch.int64)
    r = evaluate(qf, gf, qp, gp, qc, gc, rerank=True, k1=20, k2=6, lambda_value=0.3, chunk_size=7)
    assert 0.0 <= r["mAP"] <= 1.0
    # the same ranking as our distances: rank-1 accuracy by hand
    dist = KReciprocalReranker(qf, gf).distance_rows(0, 40)
    top1 = gp.numpy()[np.argmin(dist, axis=1)] == qp.numpy()
    assert float(r["cmc"][0]) == pytest.approx(top1.mean())
