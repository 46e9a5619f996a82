"""Pseudo labels: kNN search, sparse k-reciprocal Jaccard distance (spec §3), DBSCAN, quality.

Public API (contract, see docs/architecture.md)::

    knn(features, k, backend="auto", block_size=None) -> (distances N×k float32, indices N×k int64)
    knn_lists_sharded(x, k, backend="auto", block_size=None, collective=True)   # rows split over ranks
    jaccard_distance(features, k1=30, k2=6, max_distance=None, knn_backend="auto", progress=True,
                     collective=False) -> scipy.sparse.csr_matrix (N×N float32, stored = pairs < 1,
                     explicit zeros kept; None on ranks other than 0 when collective)
    cluster(distance, eps, min_samples=4) -> np.ndarray int64 labels (-1 outlier, 0..C-1)
    label_quality(pseudo_labels, true_pids) -> {"nmi", "ari", "pair_precision", "pair_recall"}
    JaccardDBSCAN(k1, k2, eps, min_samples, knn_backend, progress, device)(features) -> labels  # collective
    GroundTruthLabeler()(features, identities) -> the true ids renumbered (the ceiling of any labeler)
    build_labeler(name, options, **settings) ; register_labeler(name, factory) ; LABELERS
    check_labeler_options(name, options) ; check_eps(eps)   # the option check and the one eps range
    call_labeler(labeler, features, cameras, identities)   # passes the keywords the labeler names
    InfomapLabeler(k=15, min_sim=0.5, outlier_size=4)(features) -> labels   # Cluster Contrast's InfoMap
    camera_jaccard_distance(features, cameras, k1_intra, k1_inter, k2_intra, k2_inter, max_distance)
        -> CA-Jaccard sparse distance (JaccardDBSCAN(camera_balance=True))
    camera_spread(labels, cameras) -> {"cluster_cross_camera_share", "cluster_cameras_mean"}

Decisions (documented in the modules):

- Neighbour order: (squared Euclidean distance, index) — ties go to the smaller index — with the
  point itself forced to position 0; near-ties are re-ordered on float64 distances and every kept
  distance is recomputed in float64, so the exact backends (faiss, torch) return identical lists
  for any block size, thread count or number of ranks (:mod:`.neighbours`, :mod:`.sharded`).
- Under torchrun the labeler is collective: each rank searches a shard of the kNN rows, rank 0
  computes the Jaccard graph and DBSCAN (:mod:`.sharded`).
- Off-by-ones of spec §3: one kNN search with k = k1, R(i, k) = rank[i, :k+1] (so R(i, k1) is all
  k1 entries), expansion over the first round(k1/2)+1 entries (:mod:`.kreciprocal`).
- N < k1: k1 is clamped to N with a warning (k2 to k1); N < 2 is a DmireidError.
- The Jaccard graph stores every pair < 1 (or ≤ max_distance) with explicit zeros kept and an
  exact-zero diagonal; DBSCAN on it equals DBSCAN on the dense matrix for eps < 1.
- label_quality counts outliers (-1) as singleton clusters.
"""

from dmireid.pseudo_labels.camera_jaccard import camera_jaccard_distance
from dmireid.pseudo_labels.clustering import camera_spread, check_eps, cluster, label_quality
from dmireid.pseudo_labels.infomap import InfomapLabeler
from dmireid.pseudo_labels.jaccard import jaccard_distance
from dmireid.pseudo_labels.ground_truth import GroundTruthLabeler
from dmireid.pseudo_labels.labeler import (LABELERS, JaccardDBSCAN, Labeler, build_labeler, call_labeler,
                                           check_labeler_options, construct_labeler, register_labeler)
from dmireid.pseudo_labels.sharded import knn, knn_lists_sharded

__all__ = ["knn", "knn_lists_sharded", "jaccard_distance", "cluster", "label_quality", "Labeler", "JaccardDBSCAN",
           "GroundTruthLabeler", "build_labeler", "construct_labeler", "call_labeler", "register_labeler", "LABELERS", "InfomapLabeler",
           "camera_jaccard_distance", "camera_spread", "check_labeler_options", "check_eps"]
