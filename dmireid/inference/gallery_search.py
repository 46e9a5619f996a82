"""Exact top-k search of a gallery by inner product: one BLAS product per block plus a partial top-k.

    sims, ids = exact_topk(gallery, gallery_ids, queries, topk=10)      # Q×topk each

``gallery`` (N×d float32, rows sorted by ascending ``gallery_ids``) is read block by block: for
each block of ``block_size`` rows, ``queries @ block.T`` (one sgemm, Q×B scores) and
``np.argpartition`` keep the block's best ``topk`` columns; the candidates of all blocks (Q ×
blocks·topk) are sorted once at the end. Memory per call is O(Q·block_size + Q·N/block_size·topk),
not O(Q·N), and no step sorts a whole row.

Order (stated, and what the tests check against a numpy full sort): larger inner product first;
equal inner products by smaller id first. Where the gallery holds fewer than ``topk`` rows the
remaining columns hold id -1 and similarity -inf.
"""

from __future__ import annotations

import numpy as np

DEFAULT_BLOCK_SIZE = 16384  # rows per sgemm: 16384×512 float32 = 32 MB read, 100×16384 scores = 6.5 MB


def block_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns (Q×min(k, B), unordered) of each row's ``k`` largest ``scores`` (Q×B); among equal
    scores at the boundary the smaller columns are kept."""
    width = scores.shape[1]
    if width <= k:
        return np.broadcast_to(np.arange(width), scores.shape).copy()
    cols = np.argpartition(scores, width - k, axis=1)[:, width - k:]
    kth = np.take_along_axis(scores, cols[:, :1], axis=1)  # the k-th largest value of each row
    at_least = np.count_nonzero(scores >= kth, axis=1)
    for row in np.flatnonzero(at_least > k):  # a tie at the boundary: rare, and a loop over rows only
        above = np.flatnonzero(scores[row] > kth[row, 0])
        equal = np.flatnonzero(scores[row] == kth[row, 0])[:k - len(above)]
        cols[row] = np.concatenate([above, equal])
    return cols


def exact_topk(gallery: np.ndarray, gallery_ids: np.ndarray, queries: np.ndarray, topk: int,
               block_size: int = DEFAULT_BLOCK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``(similarities float32 Q×topk, ids int64 Q×topk)``: the ``topk`` rows of ``gallery`` (N×d,
    sorted by ``gallery_ids``) with the largest inner product with each query (Q×d), in the order
    stated in the module doc."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    gallery_ids = np.asarray(gallery_ids, dtype=np.int64)
    if topk < 1 or block_size < 1:
        raise ValueError(f"topk ({topk}) and block_size ({block_size}) must be >= 1")
    count, k = len(gallery), min(topk, len(gallery))
    sims = np.full((len(queries), topk), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), topk), -1, dtype=np.int64)
    if k == 0 or len(queries) == 0:
        return sims, ids
    found_sims, found_ids = [], []
    for start in range(0, count, block_size):
        scores = queries @ gallery[start:start + block_size].T
        cols = block_topk(scores, k)
        found_sims.append(np.take_along_axis(scores, cols, axis=1))
        found_ids.append(gallery_ids[start + cols])
    cand_sims, cand_ids = np.concatenate(found_sims, axis=1), np.concatenate(found_ids, axis=1)
    order = np.lexsort((cand_ids, -cand_sims), axis=1)[:, :k]
    sims[:, :k] = np.take_along_axis(cand_sims, order, axis=1)
    ids[:, :k] = np.take_along_axis(cand_ids, order, axis=1)
    return sims, ids


def similarities_to_distances(sims: np.ndarray) -> np.ndarray:
    """Cosine distances ``1 - sim`` clipped to [0, 2] (unit rows); -inf (no result) becomes inf."""
    distances = np.clip(1.0 - sims, 0.0, 2.0).astype(np.float32)
    distances[~np.isfinite(sims)] = np.inf
    return distances
