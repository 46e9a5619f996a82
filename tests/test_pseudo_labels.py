"""Parity of the sparse pseudo-label pipeline with a dense reference written from spec §3.

The reference below is deliberately naive (dense N×N float64 matrices, Python loops over rows and
sets) and shares no code with ``dmireid.pseudo_labels``. Neighbour lists: a stable argsort of each
dense float64 row of squared distances ``sum((x_i − x_j)²)`` — ties broken by the smaller index —
with the point itself moved to the front; the package documents the same rule.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from sklearn.cluster import DBSCAN  # noqa: E402

from dmireid.errors import DmireidError  # noqa: E402
from dmireid.pseudo_labels import cluster, jaccard_distance, knn, label_quality  # noqa: E402

torch.set_num_threads(1)
try:
    import faiss

    faiss.omp_set_num_threads(1)
    HAVE_FAISS = True
except ImportError:  # pragma: no cover - faiss is an optional extra
    HAVE_FAISS = False

needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss not installed")


# ----------------------------------------------------------------------------------------------
# data
def make_features(n, d, n_centers, spread, seed, dup_frac=0.05, big_group=0, near_frac=0.05):
    """Clustered unit features with exact duplicates (ties), near-duplicates (distance
    differences below float32 resolution) and optionally one large group of identical rows (more
    duplicates than k1 + the search window)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_centers, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = rng.integers(0, n_centers, n)
    x = centers[labels] + spread * rng.normal(size=(n, d)) / math.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float32)
    n_dup = int(dup_frac * n)
    if n_dup:
        src = rng.choice(n, n_dup, replace=False)
        dst = rng.choice(n, n_dup, replace=False)
        x[dst] = x[src]
        labels[dst] = labels[src]
    n_near = int(near_frac * n)
    if n_near:
        src = rng.choice(n, n_near, replace=False)
        dst = rng.choice(n, n_near, replace=False)
        x[dst] = x[src] + (1e-7 * rng.standard_normal((n_near, d))).astype(np.float32)
        labels[dst] = labels[src]
    if big_group:
        members = rng.choice(n, big_group, replace=False)
        x[members] = x[members[0]]
        labels[members] = labels[members[0]]
    return x, labels


# ----------------------------------------------------------------------------------------------
# dense reference of spec §3
def ref_sqdist(x):
    x = x.astype(np.float64)
    out = np.empty((len(x), len(x)))
    for s in range(0, len(x), 64):
        diff = x[s : s + 64, None, :] - x[None, :, :]
        out[s : s + 64] = (diff * diff).sum(axis=2)
    return out


def ref_rank(x, k, sqdist=None):
    order = np.argsort(ref_sqdist(x) if sqdist is None else sqdist, axis=1, kind="stable")
    rank = np.empty((len(x), k), dtype=np.int64)
    for i in range(len(x)):
        others = [j for j in order[i] if j != i]
        rank[i] = [i] + others[: k - 1]
    return rank


def ref_jaccard(x, rank, k1, k2):
    """Dense float64 Jaccard distance following spec §3 word by word."""
    n = len(x)
    xd = x.astype(np.float64)
    half = int(np.around(k1 / 2))

    def r_list(i, k):  # R(i, k) = the first k + 1 entries of rank[i]
        return list(rank[i, : k + 1])

    r_full = [set(r_list(i, k1)) for i in range(n)]
    r_half = [set(r_list(i, half)) for i in range(n)]
    s_sets = [{j for j in r_list(i, k1) if i in r_full[j]} for i in range(n)]
    c_sets = [{l for l in r_list(j, half) if j in r_half[l]} for j in range(n)]
    v = np.zeros((n, n))
    for i in range(n):
        s_star = set(s_sets[i])
        for j in s_sets[i]:
            if len(c_sets[j] & s_sets[i]) > 2 / 3 * len(c_sets[j]):
                s_star |= c_sets[j]
        idx = np.array(sorted(s_star))
        d = 2 - 2 * xd[idx] @ xd[i]
        w = np.exp(-d)
        v[i, idx] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    dist = np.ones((n, n))
    for i in range(n):
        cols = np.flatnonzero(v[i])
        m = np.minimum(v[i, cols][None, :], v[:, cols]).sum(axis=1)
        dist[i] = 1 - m / (2 - m)
    return np.maximum(dist, 0.0)


def densify(graph):
    out = np.ones(graph.shape)
    coo = graph.tocoo()
    out[coo.row, coo.col] = coo.data
    return out


def stored_mask(graph):
    mask = np.zeros(graph.shape, dtype=bool)
    coo = graph.tocoo()
    mask[coo.row, coo.col] = True
    return mask


# ----------------------------------------------------------------------------------------------
CASES = [
    # n, d, centers, spread, seed, k1, k2, big_group
    (50, 8, 5, 0.6, 0, 20, 6, 0),
    (400, 16, 30, 0.8, 1, 30, 6, 40),
    (900, 17, 60, 0.9, 2, 25, 3, 0),
    (1500, 33, 100, 0.75, 3, 30, 6, 0),
    (3000, 48, 180, 0.85, 4, 30, 6, 35),
    (300, 12, 20, 0.7, 5, 7, 1, 0),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"n{c[0]}-d{c[1]}-k{c[5]}-{c[6]}")
def case(request):
    n, d, centers, spread, seed, k1, k2, big = request.param
    x, labels = make_features(n, d, centers, spread, seed, big_group=big)
    sqdist = ref_sqdist(x)
    rank = ref_rank(x, k1, sqdist)
    ref = ref_jaccard(x, rank, k1, k2)
    backend = "faiss" if HAVE_FAISS else "torch"
    ours = jaccard_distance(x, k1=k1, k2=k2, knn_backend=backend, progress=False)
    return dict(x=x, labels=labels, k1=k1, k2=k2, rank=rank, ref=ref, ours=ours, sqdist=sqdist)


def test_knn_matches_reference_order(case):
    for backend in (["faiss", "torch"] if HAVE_FAISS else ["torch"]):
        dist, idx = knn(case["x"], case["k1"], backend=backend)
        assert idx.dtype == np.int64 and dist.dtype == np.float32
        np.testing.assert_array_equal(idx, case["rank"])
        assert (idx[:, 0] == np.arange(len(idx))).all()
        ref_d = case["sqdist"][np.arange(len(idx))[:, None], idx]
        np.testing.assert_allclose(dist, ref_d, atol=1e-6)


def test_jaccard_storage_contract(case):
    ours, n = case["ours"], len(case["x"])
    assert sp.isspmatrix_csr(ours) and ours.shape == (n, n) and ours.dtype == np.float32
    ours.has_canonical_format  # noqa: B018 - computed from the structure
    for i in range(0, n, max(1, n // 50)):
        cols = ours.indices[ours.indptr[i] : ours.indptr[i + 1]]
        assert (np.diff(cols) > 0).all()
    assert (ours.diagonal() == 0).all() and stored_mask(ours).diagonal().all()
    assert (ours.data >= 0).all() and (ours.data < 1).all()
    assert (ours != ours.T).nnz == 0


def test_jaccard_parity_with_dense_reference(case):
    ref, ours = case["ref"], case["ours"]
    np.testing.assert_array_equal(stored_mask(ours), ref < 1)
    coo = ours.tocoo()
    err = np.abs(coo.data - ref[coo.row, coo.col]).max()
    assert err <= 1e-5, err
    # pairs the reference clips to exactly 0 are stored (as zeros up to rounding)
    zero = ref == 0
    assert stored_mask(ours)[zero].all()
    assert np.abs(densify(ours)[zero]).max() <= 1e-6


@pytest.mark.parametrize("eps", [0.6, 0.45])
def test_dbscan_labels_identical(case, eps):
    ref_labels = DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(case["ref"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn EfficiencyWarning about row ordering
        labels = cluster(case["ours"], eps=eps, min_samples=4)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(cluster(densify(case["ours"]), eps=eps), ref_labels)


def test_max_distance_filters(case):
    x, k1, k2, ours = case["x"], case["k1"], case["k2"], case["ours"]
    backend = "faiss" if HAVE_FAISS else "torch"  # same backend as ``ours``: bit-identical values
    cut = jaccard_distance(x, k1=k1, k2=k2, max_distance=0.5, knn_backend=backend, progress=False)
    keep = stored_mask(ours) & (densify(ours) <= 0.5)
    np.testing.assert_array_equal(stored_mask(cut), keep)
    np.testing.assert_array_equal(cut.toarray(), np.where(keep, densify(ours), 0).astype(np.float32))
    np.testing.assert_array_equal(cluster(cut, eps=0.45), cluster(ours, eps=0.45))


# ----------------------------------------------------------------------------------------------
def test_knn_backends_on_duplicates_and_tensor_input():
    x, _ = make_features(700, 10, 40, 0.9, 7, dup_frac=0.2, big_group=60)
    ref = ref_rank(x, 30)
    d_t, i_t = knn(torch.from_numpy(x), 30, backend="torch", block_size=97)
    np.testing.assert_array_equal(i_t, ref)
    if HAVE_FAISS:
        d_f, i_f = knn(x, 30, backend="faiss")
        np.testing.assert_array_equal(i_f, i_t)
        np.testing.assert_array_equal(d_f, d_t)


def test_knn_near_ties_are_resolved_exactly(monkeypatch):
    """Near-duplicates whose distance differences are below float32 resolution: without the
    float64 rescoring of ambiguous rows the backends' orders disagree with the exact one."""
    import dmireid.pseudo_labels.neighbours as nb

    x, _ = make_features(800, 24, 40, 0.9, 12, dup_frac=0.0, near_frac=0.3)
    ref = ref_rank(x, 30)
    backends = ["torch", "faiss"] if HAVE_FAISS else ["torch"]
    for backend in backends:
        np.testing.assert_array_equal(knn(x, 30, backend=backend)[1], ref)
    monkeypatch.setattr(nb, "search_tolerance", lambda x: 0.0)
    assert any((knn(x, 30, backend=b)[1] != ref).any() for b in backends)


@needs_faiss
def test_knn_hnsw_is_close():
    x, _ = make_features(2000, 16, 100, 0.8, 8, dup_frac=0.0)
    _, exact = knn(x, 20, backend="torch")
    _, approx = knn(x, 20, backend="faiss-hnsw")
    assert (approx[:, 0] == np.arange(len(x))).all()
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(approx, exact)])
    assert recall > 0.95


def test_jaccard_torch_backend_equals_faiss():
    x, _ = make_features(600, 16, 40, 0.9, 9)
    a = jaccard_distance(x, k1=20, knn_backend="torch", progress=False)
    b = jaccard_distance(torch.from_numpy(x), k1=20, knn_backend="auto", progress=False)
    # same pairs and, since every kept kNN distance is recomputed exactly, the same float32 values
    assert (stored_mask(a) == stored_mask(b)).all()
    np.testing.assert_array_equal(a.toarray(), b.toarray())


def test_small_n_clamps_k1(caplog):
    x, _ = make_features(12, 6, 2, 0.5, 10, dup_frac=0.0)
    with caplog.at_level("WARNING"):
        out = jaccard_distance(x, k1=30, progress=False)
    assert "k1=30" in caplog.text
    ref = ref_jaccard(x, ref_rank(x, 12), 12, 6)
    np.testing.assert_array_equal(stored_mask(out), ref < 1)
    np.testing.assert_allclose(densify(out), ref, atol=1e-5)


def test_input_errors():
    x, _ = make_features(40, 8, 4, 0.5, 11, dup_frac=0.0)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DmireidError, match="NaN"):
        jaccard_distance(bad, progress=False)
    bad[3, 2] = np.inf
    with pytest.raises(DmireidError, match="NaN or inf"):
        knn(bad, 5)
    with pytest.raises(DmireidError, match="at least 2"):
        jaccard_distance(x[:1], progress=False)
    with pytest.raises(DmireidError, match="backend"):
        knn(x, 5, backend="annoy")
    with pytest.raises(DmireidError, match="k must be"):
        knn(x, 41)
    with pytest.raises(DmireidError, match="N×d"):
        knn(x[0], 1)
    with pytest.raises(DmireidError, match="min_samples"):
        cluster(sp.identity(3, format="csr"), eps=0.5, min_samples=4)
    with pytest.raises(DmireidError, match="< 1"):
        cluster(sp.identity(5, format="csr"), eps=1.0)
    for err in (DmireidError("a\nb"),):
        assert "\n" not in str(err)


def test_cluster_treats_explicit_zeros_as_neighbours():
    # 5 points: 0-1-2-3 at distance exactly 0 (explicit zeros), 4 isolated (absent = 1)
    rows = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4]
    cols = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 4]
    g = sp.csr_matrix((np.zeros(len(rows), np.float32), (rows, cols)), shape=(5, 5))
    assert g.nnz == 17
    np.testing.assert_array_equal(cluster(g, eps=0.1, min_samples=4), [0, 0, 0, 0, -1])


# ----------------------------------------------------------------------------------------------
def test_label_quality_by_hand():
    pseudo = np.array([0, 0, 0, 1, 1, -1])
    true = np.array([5, 5, 7, 7, 7, 7])
    q = label_quality(pseudo, true)
    # outlier -> its own cluster: pseudo clusters {0,1,2} {3,4} {5}; true ids {0,1} {2,3,4,5}
    # pseudo pairs: 3 + 1 = 4, of which same id: (0,1) and (3,4) -> precision 2/4
    # true pairs: 1 + 6 = 7 -> recall 2/7
    assert q["pair_precision"] == pytest.approx(0.5)
    assert q["pair_recall"] == pytest.approx(2 / 7)
    # ARI: index 2, row pairs 7, column pairs 4, all pairs 15
    expected = 28 / 15
    assert q["ari"] == pytest.approx((2 - expected) / ((7 + 4) / 2 - expected))
    # NMI (arithmetic mean): contingency [[2,0,0],[1,2,1]] / 6
    p = np.array([[2, 0, 0], [1, 2, 1]]) / 6
    pt, pp = p.sum(1), p.sum(0)
    mi = sum(p[a, b] * math.log(p[a, b] / (pt[a] * pp[b])) for a in range(2) for b in range(3) if p[a, b] > 0)
    h_t = -sum(v * math.log(v) for v in pt)
    h_p = -sum(v * math.log(v) for v in pp)
    assert q["nmi"] == pytest.approx(mi / ((h_t + h_p) / 2))
    perfect = label_quality(torch.tensor([1, 1, 0, 0]), np.array([3, 3, 9, 9]))
    assert perfect == {"nmi": 1.0, "ari": 1.0, "pair_precision": 1.0, "pair_recall": 1.0}
    none = label_quality(np.array([-1, -1, -1]), np.array([1, 1, 2]))
    assert none["pair_precision"] == 0.0 and none["pair_recall"] == 0.0
    with pytest.raises(DmireidError):
        label_quality(np.array([0, 1]), np.array([0, 1, 2]))
