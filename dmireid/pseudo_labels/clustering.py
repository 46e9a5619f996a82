"""DBSCAN on the (sparse) Jaccard graph, and pseudo-label quality against true identities."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from dmireid.errors import DmireidError

logger = logging.getLogger(__name__)


def _neighbour_graph(graph: sp.csr_matrix, eps: float) -> sp.csr_matrix:
    """The entries of ``graph`` with value <= eps (explicit zeros kept), every row ordered by
    (value, column) — the layout sklearn expects for precomputed sparse neighbourhoods (it would
    otherwise warn and copy). Entries beyond eps are never neighbours, so dropping them here
    changes nothing but the size sklearn has to handle."""
    n = graph.shape[0]
    keep = graph.data <= eps
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(graph.indptr))[keep]
    data = graph.data[keep]
    cols = graph.indices[keep]
    order = np.lexsort((cols, data, rows))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return sp.csr_matrix((data[order], cols[order], indptr), shape=graph.shape)


def check_eps(eps: float, what: str = "pseudo_labels.eps") -> float:
    """The one range of a labeler's ``eps``: in (0, 1), because a pair absent from the sparse Jaccard
    graph has distance 1 (it must never be a neighbour); one-line error naming ``what``."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise DmireidError(f"{what} must be a number in (0, 1), got {eps!r}") from None
    if not 0.0 < value < 1.0:  # also NaN
        raise DmireidError(f"{what} must be in (0, 1), i.e. > 0 and < 1 (absent pairs of the sparse "
                           f"Jaccard graph have distance 1), got {eps}")
    return value


def cluster(distance, eps: float, min_samples: int = 4) -> np.ndarray:
    """DBSCAN (``metric="precomputed"``) labels of a distance matrix.

    Args:
        distance: N×N sparse matrix from :func:`jaccard_distance` (absent entry = distance 1,
            explicit stored zeros = distance 0 — they *are* neighbours) or a dense N×N array.
        eps: neighbourhood radius; for a sparse graph it must be in (0, 1), so that absent pairs
            (distance 1) are never neighbours, which makes the result identical to DBSCAN on the
            dense matrix. With a graph built with ``max_distance``, use ``eps <= max_distance``.
        min_samples: DBSCAN core-point threshold (the point itself counts).

    Returns:
        int64 array of N labels: ``-1`` outlier, clusters ``0..C-1`` numbered in order of their
        first core point (sklearn's order).

    Complexity: O(nnz) time and memory on a sparse graph (plus sklearn's neighbourhood lists).
    """
    from sklearn.cluster import DBSCAN  # noqa: PLC0415  (heavy import, only here)

    if isinstance(min_samples, bool) or not isinstance(min_samples, (int, np.integer)) or min_samples < 1:
        raise DmireidError(f"cluster: min_samples must be an integer >= 1, got {min_samples!r}")
    try:
        eps = float(eps)
    except (TypeError, ValueError) as exc:
        raise DmireidError(f"cluster: eps must be a number, got {eps!r}") from exc
    if not eps > 0:
        raise DmireidError(f"cluster: eps must be > 0, got {eps}")
    if sp.issparse(distance):
        graph = sp.csr_matrix(distance)
        check_eps(eps, "cluster: eps")
        if graph.nnz and (not np.isfinite(graph.data).all() or graph.data.min() < 0):
            raise DmireidError("cluster: distances must be finite and non-negative")
        graph = _neighbour_graph(graph, eps)
    else:
        graph = np.asarray(distance, dtype=np.float64)
        if graph.ndim != 2:
            raise DmireidError(f"cluster: expected an N×N distance matrix, got shape {graph.shape}")
        if not np.isfinite(graph).all():
            raise DmireidError("cluster: distances must be finite")
    n = graph.shape[0]
    if graph.shape != (n, n):
        raise DmireidError(f"cluster: expected a square distance matrix, got shape {graph.shape}")
    if n < min_samples:
        raise DmireidError(f"cluster: {n} samples is fewer than min_samples={min_samples}")
    labels = DBSCAN(eps=eps, min_samples=int(min_samples), metric="precomputed", n_jobs=1).fit_predict(graph)
    labels = np.asarray(labels, dtype=np.int64)
    n_clusters = int(labels.max()) + 1 if len(labels) else 0
    logger.info(
        "cluster: eps=%.3f min_samples=%d -> %d clusters, %d outliers of %d",
        eps, min_samples, n_clusters, int((labels < 0).sum()), n,
    )
    return labels


def _pairs(counts: np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    return float((counts * (counts - 1.0)).sum() / 2.0)


def label_quality(pseudo_labels, true_pids) -> dict:
    """Agreement of pseudo labels with the true identities.

    Outliers (``-1``) each count as a singleton cluster of their own, for all four numbers: they
    form no predicted pair, but their true pairs count as missed in the recall.

    Returns ``{"nmi", "ari", "pair_precision", "pair_recall"}`` (fractions): sklearn's
    ``normalized_mutual_info_score`` (arithmetic mean) and ``adjusted_rand_score``;
    ``pair_precision`` = (pairs in the same pseudo cluster sharing the true id) / (pairs in the
    same pseudo cluster), ``pair_recall`` = the same numerator / (pairs sharing the true id). A
    ratio with an empty denominator is reported as 0.0. Computed from the contingency table,
    O(N + nnz(table)), never O(N²).
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score  # noqa: PLC0415
    from sklearn.metrics.cluster import contingency_matrix  # noqa: PLC0415

    p = np.asarray(pseudo_labels.cpu() if hasattr(pseudo_labels, "cpu") else pseudo_labels).reshape(-1)
    t = np.asarray(true_pids.cpu() if hasattr(true_pids, "cpu") else true_pids).reshape(-1)
    if p.shape != t.shape:
        raise DmireidError(f"label_quality: {p.shape[0]} pseudo labels but {t.shape[0]} true ids")
    if p.size == 0:
        raise DmireidError("label_quality: empty label arrays")
    p = p.astype(np.int64)
    out_mask = p < 0
    if out_mask.any():
        p = p.copy()
        base = int(p.max()) + 1 if (~out_mask).any() else 0
        p[out_mask] = base + np.arange(int(out_mask.sum()))
    table = contingency_matrix(t, p, sparse=True)
    both = _pairs(table.data)
    pred = _pairs(np.asarray(table.sum(axis=0)).ravel())
    true = _pairs(np.asarray(table.sum(axis=1)).ravel())
    return {
        "nmi": float(normalized_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
        "pair_precision": both / pred if pred > 0 else 0.0,
        "pair_recall": both / true if true > 0 else 0.0,
    }


def camera_spread(pseudo_labels, cameras) -> dict:
    """How far clusters reach across cameras (label-free): N labels (-1 outlier), N camera ids ->

    ``{"cluster_cross_camera_share": share of clusters with images from >= 2 cameras,
    "cluster_cameras_mean": mean number of distinct cameras per cluster}`` (0 and 0 without a
    cluster). Vectorised: one ``unique`` over (cluster, camera) keys.
    """
    labels = np.asarray(pseudo_labels, dtype=np.int64).reshape(-1)
    cams = np.asarray(cameras, dtype=np.int64).reshape(-1)
    if labels.shape != cams.shape:
        raise ValueError(f"{labels.size} labels but {cams.size} camera ids")
    keep = labels >= 0
    if not keep.any():
        return {"cluster_cross_camera_share": 0.0, "cluster_cameras_mean": 0.0}
    width = int(cams.max()) + 1
    pairs = np.unique(labels[keep] * width + cams[keep])
    per_cluster = np.bincount(pairs // width)
    per_cluster = per_cluster[per_cluster > 0]  # cluster ids without a member do not count
    return {"cluster_cross_camera_share": float((per_cluster >= 2).mean()),
            "cluster_cameras_mean": float(per_cluster.mean())}
