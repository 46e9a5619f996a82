"""Pseudo labels: kNN search, sparse k-reciprocal Jaccard distance (spec §3), DBSCAN, quality.

Public API (contract, see docs/architecture.md)::

    knn(features, k, backend="auto", block_size=None) -> (distances N×k float32, indices N×k int64)
    jaccard_distance(features, k1=30, k2=6, max_distance=None, knn_backend="auto", progress=True)
        -> scipy.sparse.csr_matrix (N×N float32, stored = pairs < 1, explicit zeros kept)
    cluster(distance, eps, min_samples=4) -> np.ndarray int64 labels (-1 outlier, 0..C-1)
    label_quality(pseudo_labels, true_pids) -> {"nmi", "ari", "pair_precision", "pair_recall"}
"""

from dmireid.pseudo_labels.clustering import cluster, label_quality
from dmireid.pseudo_labels.jaccard import jaccard_distance
from dmireid.pseudo_labels.neighbours import knn

__all__ = ["knn", "jaccard_distance", "cluster", "label_quality"]
