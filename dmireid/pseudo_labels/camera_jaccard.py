"""Camera-balanced Jaccard distance (``pseudo_labels.camera_balance``): CA-Jaccard, sparse.

Follows CA-Jaccard (Chen et al., CVPR 2024; chenyiyuu/CA-Jaccard ``caj/utils/caj_rerank.py``,
citations in docs/recipe_semantics.md §7) with its two camera-aware parts on:

- **CKRNNs** (camera-aware k-reciprocal neighbours): the reciprocal set of image i is the union of
  its k-reciprocal neighbours on the *intra-camera* ranking (only images of its own camera, lists
  of ``k1_intra + 1`` incl. itself) and on the *inter-camera* ranking (only images of the other
  cameras, lists of ``k1_inter + 1``); no further expansion. Each camera's images thus get
  cross-camera neighbours however much closer their own camera's images are (the per-camera
  distance bias that keeps plain k-reciprocal sets inside one camera).
- weights: softmax of −(2 − 2·x_i·x_j) over the set (as in the plain Jaccard distance).
- **CLQE** (camera-aware local query expansion): row i ← mean of the rows of its ``k2_intra``
  nearest intra-camera images (itself first) and its ``k2_inter`` nearest inter-camera images.
- Jaccard distance of the expanded rows, as in :mod:`.jaccard` (same sparse storage contract).

Sparse: the rankings are kNN searches inside each camera and from each camera to the others
(O(N²·d) time in all, O(N·k) memory: no N×N matrix). Exactness: intra lists come from
:func:`.sharded.knn` (exact, ties to the smaller index); inter lists take ``k + pad`` float32
candidates, rescore them in float64 and order by (distance, index), so they are exact unless more
than ``pad`` images tie with the last kept one within float32 rounding. A camera group smaller than
a list gives shorter lists (CA-Jaccard would fill them with images of the wrong camera group).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch

from dmireid.errors import DmireidError
from dmireid.pseudo_labels import kreciprocal as kr
from dmireid.pseudo_labels.jaccard import _symmetric_jaccard, pair_distances
from dmireid.pseudo_labels.neighbours import as_features
from dmireid.pseudo_labels.sharded import knn

logger = logging.getLogger(__name__)

_PAD = 8  # extra float32 candidates of the inter-camera search
_BLOCK = 1 << 24  # distance entries per block of the inter-camera search


def cross_knn(queries: torch.Tensor, base: torch.Tensor, k: int) -> np.ndarray:
    """The ``k`` nearest rows of ``base`` to every query row: Q×k int64 positions in ``base``,
    ordered by (float64 squared distance, position); float32 search of ``k + pad`` candidates."""
    k = min(k, base.shape[0])
    if k == 0 or queries.shape[0] == 0:
        return np.zeros((queries.shape[0], k), dtype=np.int64)
    c = min(k + _PAD, base.shape[0])
    sq_b = (base * base).sum(1)
    bn = base.double().cpu().numpy()
    bs = max(1, min(_BLOCK // base.shape[0], _BLOCK // (4 * c * base.shape[1])))
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for s in range(0, queries.shape[0], bs):
        q = queries[s:s + bs]
        d = torch.addmm((q * q).sum(1)[:, None] + sq_b[None, :], q, base.T, alpha=-2.0)
        cand = torch.topk(d, c, dim=1, largest=False).indices.cpu().numpy()
        qn = q.double().cpu().numpy()
        d64 = ((qn[:, None, :] - bn[cand]) ** 2).sum(-1)  # rows×c float64
        out[s:s + bs] = np.take_along_axis(cand, _lex_order(d64, cand), axis=1)[:, :k]
    return out


def _lex_order(d: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per row, the permutation ordering (d, idx) ascending."""
    rows = np.repeat(np.arange(d.shape[0]), d.shape[1])
    flat = np.lexsort((idx.ravel(), d.ravel(), rows))
    return (flat - rows * d.shape[1]).reshape(d.shape)


def camera_rankings(x: torch.Tensor, cameras: np.ndarray, k_intra: int, k_inter: int,
                    knn_backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Intra-camera lists N×k_intra (self first) and inter-camera lists N×k_inter, global ids,
    padded with -1 where a camera group is too small."""
    n = x.shape[0]
    intra = np.full((n, k_intra), -1, dtype=np.int64)
    inter = np.full((n, k_inter), -1, dtype=np.int64)
    for cam in np.unique(cameras):
        rows = np.flatnonzero(cameras == cam)
        others = np.flatnonzero(cameras != cam)
        if len(rows) >= 2:
            _, local = knn(x[torch.as_tensor(rows, device=x.device)], min(k_intra, len(rows)), backend=knn_backend)
            intra[rows, :local.shape[1]] = rows[local]
        else:
            intra[rows, 0] = rows
        found = cross_knn(x[torch.as_tensor(rows, device=x.device)], x[torch.as_tensor(others, device=x.device)],
                          k_inter)
        inter[rows, :found.shape[1]] = others[found]
    return intra, inter


def reciprocal_pairs(rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of the pairs j ∈ rank[i] with i ∈ rank[j] (entries -1 ignored)."""
    n = rank.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), rank.shape[1])
    cols = rank.ravel()
    valid = cols >= 0
    rows, cols = rows[valid], cols[valid]
    keys = np.sort(rows * n + cols)
    back = cols * n + rows
    pos = np.minimum(np.searchsorted(keys, back), max(len(keys) - 1, 0))
    member = keys[pos] == back if len(keys) else np.zeros(0, dtype=bool)
    return rows[member], cols[member]


def _csr_pattern(rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, duplicate-free CSR structure (indptr, indices) of the pairs."""
    keys = np.unique(rows * n + cols)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // n, minlength=n), out=indptr[1:])
    return indptr, keys % n


def _mean_of_rows(v: sp.csr_matrix, lists: np.ndarray) -> sp.csr_matrix:
    """Row i ← mean of the rows ``lists[i]`` of ``v`` (entries -1 ignored)."""
    n = v.shape[0]
    valid = lists >= 0
    counts = valid.sum(1)
    rows = np.repeat(np.arange(n, dtype=np.int64), counts)
    q = sp.csr_matrix((1.0 / counts[rows], (rows, lists[valid])), shape=(n, n))
    out = (q @ v).tocsr()
    out.sort_indices()
    return out


def camera_jaccard_distance(features, cameras, k1_intra: int = 5, k1_inter: int = 20, k2_intra: int = 3,
                            k2_inter: int = 3, max_distance: float | None = None,
                            knn_backend: str = "auto") -> sp.csr_matrix:
    """CA-Jaccard distance (module docstring) as an N×N sparse matrix with the contract of
    :func:`dmireid.pseudo_labels.jaccard.jaccard_distance` (absent = 1, explicit zeros kept)."""
    x = as_features(features)
    n = x.shape[0]
    cams = np.asarray(cameras, dtype=np.int64).reshape(-1)
    if cams.shape[0] != n:
        raise DmireidError(f"pseudo_labels.camera_balance: {n} features but {cams.shape[0]} camera ids")
    if n < 2:
        raise DmireidError(f"clustering needs at least 2 images, got {n}")
    k_intra = max(k1_intra + 1, k2_intra)
    k_inter = max(k1_inter + 1, k2_inter)
    intra, inter = camera_rankings(x, cams, k_intra, k_inter, knn_backend)
    r1, c1 = reciprocal_pairs(intra[:, :k1_intra + 1])
    r2, c2 = reciprocal_pairs(inter[:, :k1_inter + 1])
    indptr, indices = _csr_pattern(np.concatenate([r1, r2]), np.concatenate([c1, c2]), n)
    xn = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
    d = pair_distances(xn, indptr, indices, intra, None)
    v = sp.csr_matrix((kr.normalised_exp_weights(indptr, d), indices, indptr), shape=(n, n))
    v = _mean_of_rows(v, np.concatenate([intra[:, :k2_intra], inter[:, :k2_inter]], axis=1))
    logger.info("camera-balanced jaccard: %d cameras, mean |CKRNN| %.1f (%.1f across cameras)",
                len(np.unique(cams)), len(indices) / n, len(r2) / n)
    return _symmetric_jaccard(v, max_distance)
