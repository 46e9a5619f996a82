"""Sparse k-reciprocal Jaccard distance between all training features (spec §3).

Result contract (:func:`jaccard_distance`): an N×N ``scipy.sparse.csr_matrix`` of float32 with
canonical structure (each row sorted by column, no duplicates). Stored entries are exactly the
pairs whose distance is < 1 (pairs whose weight vectors share a non-zero column), or ≤
``max_distance`` when it is given; an absent entry means distance 1. Stored distances of 0 (the
diagonal, and pairs whose expanded weight vectors coincide, clipped from tiny negatives) are kept
as **explicit zeros** — do not call ``eliminate_zeros()`` or arithmetic that drops them. The matrix
is exactly symmetric (each pair is computed once and mirrored).

Peak memory is O(N·k1·(h+1) + |stored pairs|) plus one block of ``EMIT_BLOCK`` temporaries; no
N×N dense array is ever built.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from dmireid import distributed as dist
from dmireid.errors import DmireidError
from dmireid.progress import progress_bar
from dmireid.pseudo_labels import kreciprocal as kr
from dmireid.pseudo_labels.neighbours import as_features, resolve_backend, round_half
from dmireid.pseudo_labels.sharded import knn_lists_sharded

logger = logging.getLogger(__name__)


_PHASES = ["kNN", "reciprocal sets", "expansion", "weights", "query expansion", "jaccard"]


class _Phases:
    """A progress bar over the phases (on a terminal) plus one timed log line per phase."""

    def __init__(self, names, progress):
        self.bar = progress_bar(total=len(names), desc="jaccard", enabled=progress, leave=False)
        self.t = time.perf_counter()
        self.timings: dict[str, float] = {}

    def start(self, name):
        self.bar.set_postfix_str(name)

    def done(self, name, detail=""):
        now = time.perf_counter()
        self.timings[name] = now - self.t
        logger.info("jaccard: %s done in %.2f s%s", name, now - self.t, f" ({detail})" if detail else "")
        self.t = now
        self.bar.update(1)

    def close(self):
        self.bar.close()



def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise DmireidError(f"jaccard_distance: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def jaccard_distance(
    features,
    k1: int = 30,
    k2: int = 6,
    max_distance: float | None = None,
    knn_backend: str = "auto",
    progress: bool = True,
    collective: bool = False,
    timings: dict[str, float] | None = None,
) -> sp.csr_matrix | None:
    """k-reciprocal Jaccard distance of spec §3 as a sparse N×N matrix.

    Args:
        features: N×d float32 array or tensor of L2-normalised rows (any device; the kNN search
            runs there for the torch backend, the sparse steps on the CPU).
        k1: list length of the single kNN search (self included); ``R(i, k1)`` = all of it.
            When N < k1 it is clamped to N with a warning (tiny datasets stay usable).
        k2: query-expansion length (first ``k2`` neighbours, self included; clamped to k1).
        max_distance: ``None`` stores every pair with distance < 1; a float stores only the pairs
            with distance ≤ it (what DBSCAN needs when it is called with ``eps <= max_distance``;
            it cuts memory and time of the output stage).
        knn_backend: see :func:`dmireid.pseudo_labels.sharded.knn` (``auto``, ``faiss``, ``torch``,
            ``faiss-hnsw``).
        progress: show a progress bar over the phases (the timings are logged either way at INFO).
        timings: a dict that receives the seconds of each phase (kNN, reciprocal sets, ...).
        collective: every rank of the process group calls this with the same features; the kNN
            search is split by rows over the ranks (:mod:`.sharded`) and rank 0 alone computes
            the graph. ``False``: this process does all of it.

    Returns:
        ``scipy.sparse.csr_matrix`` N×N float32 — see the module docstring for the storage
        contract (absent = 1, explicit zeros kept, diagonal stored as exactly 0, symmetric).
        ``None`` on the ranks other than 0 when ``collective``.

    Raises:
        DmireidError: non-finite features, N < 2, invalid k1/k2/max_distance/backend.

    Complexity: kNN O(N²·d) (exact backends); reciprocal sets O(N·k1·log); expansion
    O(N·k1·h·log); weights O(N·|S*|·d); query expansion O(N·k2·|S*|); Jaccard
    O(Σ_l n_l²/2) with n_l the number of rows of the expanded V using column l.
    """
    x = as_features(features)
    n = x.shape[0]
    if n < 2:
        raise DmireidError(f"jaccard_distance: need at least 2 features, got {n}")
    k1 = _check_int("k1", k1, 1)
    k2 = _check_int("k2", k2, 1)
    if max_distance is not None:
        if isinstance(max_distance, bool) or not isinstance(max_distance, (int, float, np.floating)) or not (
            max_distance >= 0
        ):
            raise DmireidError(f"jaccard_distance: max_distance must be None or a number >= 0, got {max_distance!r}")
        max_distance = float(max_distance)
    if k1 > n:
        logger.warning("jaccard_distance: k1=%d is larger than the %d features; using k1=%d", k1, n, n)
        k1 = n
    k2 = min(k2, k1)
    resolve_backend(knn_backend)  # fail early on an unusable backend
    main = not collective or dist.is_main()
    phases = _Phases(_PHASES, progress and main)
    try:
        phases.start("kNN")
        rank_dist, rank = knn_lists_sharded(x, k1, backend=knn_backend, collective=collective)
        phases.done("kNN", f"N={n}, k1={k1}, backend={knn_backend}, ranks={dist.world_size() if collective else 1}")
        if not main:
            return None
        xn = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
        out = jaccard_from_rank(xn, rank, k1, k2, max_distance, rank_dist=rank_dist, _phases=phases)
    finally:
        phases.close()
        if timings is not None:
            timings.update(phases.timings)
    return out


def jaccard_from_rank(
    x: np.ndarray,
    rank: np.ndarray,
    k1: int,
    k2: int = 6,
    max_distance: float | None = None,
    rank_dist: np.ndarray | None = None,
    progress: bool = False,
    _phases: _Phases | None = None,
) -> sp.csr_matrix:
    """All post-kNN steps of §3 given the neighbour lists ``rank`` (N×k1, self first).

    ``x`` is the N×d float32 feature matrix (numpy, CPU). ``rank_dist`` (optional, N×k1) are the
    squared Euclidean distances of ``rank``; the weights of pairs found in ``rank`` then reuse them
    (``2 − 2·x_i·x_j = ||x_i − x_j||² + 2 − ||x_i||² − ||x_j||²``) instead of gathering the
    features again. See :func:`jaccard_distance`.
    """
    own = _phases is None
    phases = _phases or _Phases(_PHASES[1:], progress)
    n = rank.shape[0]
    try:
        # 1. k-reciprocal sets S(i) over R(i, k1) and C(j) over R(j, h)
        phases.start("reciprocal sets")
        s_ptr, s_idx = kr.reciprocal_sets(rank, k1 + 1)
        c_ptr, c_idx = kr.reciprocal_sets(rank, round_half(k1) + 1)
        phases.done("reciprocal sets", f"mean |S|={len(s_idx) / n:.1f}")
        # 2. expansion
        phases.start("expansion")
        e_ptr, e_idx = kr.expanded_sets(s_ptr, s_idx, c_ptr, c_idx)
        del s_ptr, s_idx, c_ptr, c_idx
        phases.done("expansion", f"mean |S*|={len(e_idx) / n:.1f}")
        # 3. weights: softmax of -(2 - 2 x_i.x_j) over S*(i)
        phases.start("weights")
        d = pair_distances(x, e_ptr, e_idx, rank, rank_dist)
        w = kr.normalised_exp_weights(e_ptr, d)
        del d
        v = sp.csr_matrix((w, e_idx, e_ptr), shape=(n, n))
        phases.done("weights")
        # 4. query expansion
        phases.start("query expansion")
        v = kr.query_expand(v, rank, k2)
        phases.done("query expansion", f"mean nnz/row={v.nnz / n:.1f}")
        # 5. Jaccard
        phases.start("jaccard")
        out = _symmetric_jaccard(v, max_distance)
        phases.done("jaccard", f"stored pairs={out.nnz} ({out.nnz / float(n) / n:.4%})")
    finally:
        if own:
            phases.close()
    return out


def pair_distances(
    x: np.ndarray, indptr: np.ndarray, indices: np.ndarray, rank: np.ndarray, rank_dist: np.ndarray | None
) -> np.ndarray:
    """``2 − 2·x_i·x_j`` (float64) for the pairs of a CSR structure (rows i, columns j)."""
    n = len(indptr) - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    d = kr.pair_sqeuclid(x, rows, indices, rank, rank_dist, sq)
    d += 2.0
    d -= sq[rows]
    d -= sq[indices]
    return d


def _symmetric_jaccard(v: sp.csr_matrix, max_distance: float | None) -> sp.csr_matrix:
    """Distances of all pairs sharing a column of ``v``, computed on the upper triangle and
    mirrored; filtered to ``< 1`` (and ``<= max_distance``)."""
    n = v.shape[0]
    col_ptr, col_rows, col_vals, csr_to_csc = kr.to_csc_with_positions(v)
    col_len = np.diff(col_ptr)
    # entries (i, l) visit rows j >= i of column l: start at their own CSC position
    start = csr_to_csc
    cost = col_ptr[v.indices + 1] - start
    entry_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(v.indptr))
    row_cost = np.bincount(entry_rows, weights=cost, minlength=n).astype(np.int64)
    del entry_rows, col_len
    up_ptr = [np.zeros(1, dtype=np.int64)]
    up_idx, up_val = [], []
    offset = 0
    for a, b in kr.row_blocks(row_cost):
        e0, e1 = v.indptr[a], v.indptr[b]
        m = kr.min_sums(
            v.indptr[a : b + 1] - e0, v.indices[e0:e1], v.data[e0:e1],
            col_ptr, col_rows, col_vals, n, start=start[e0:e1],
        )
        dist = kr.jaccard_from_min(m.data).astype(np.float32)
        keep = dist < 1.0
        if max_distance is not None:
            keep &= dist <= max_distance
        blk_rows = np.repeat(np.arange(a, b, dtype=np.int64), np.diff(m.indptr))
        cols = m.indices.astype(np.int64)
        dist[cols == blk_rows] = 0.0  # diagonal: exact 0 (1 − 1 rounding residue removed)
        keep |= cols == blk_rows
        counts = np.bincount(blk_rows[keep] - a, minlength=b - a)
        up_ptr.append(offset + np.cumsum(counts))
        offset += int(counts.sum())
        up_idx.append(cols[keep].astype(np.int32 if n < 2**31 else np.int64))
        up_val.append(dist[keep])
        del m, dist, keep, blk_rows, cols
    up_indptr = np.concatenate(up_ptr)
    up_indices = np.concatenate(up_idx) if up_idx else np.zeros(0, dtype=np.int64)
    up_data = np.concatenate(up_val) if up_val else np.zeros(0, dtype=np.float32)
    del up_ptr, up_idx, up_val
    return _mirror_upper(up_indptr, up_indices, up_data, n)


def _mirror_upper(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n: int) -> sp.csr_matrix:
    """Full symmetric CSR from an upper-triangular one (diagonal included, rows sorted), keeping
    explicit zeros. Row ``i`` of the result = its strict-lower part (the transpose of the strict
    upper part, from scipy's O(nnz) counting-sort CSR→CSC conversion, rows ascending) followed by
    its upper part, which is already sorted by column."""
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    strict = indices != rows
    s_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[strict], minlength=n), out=s_ptr[1:])
    del rows
    upper = sp.csr_matrix((data[strict], indices[strict], s_ptr), shape=(n, n))
    del strict
    lower = upper.tocsc()  # CSC of the upper part == CSR of its transpose (explicit zeros kept)
    del upper
    lo_ptr = lower.indptr.astype(np.int64)
    full_ptr = lo_ptr + indptr
    nnz = int(full_ptr[-1])
    idx_dtype = np.int32 if n < 2**31 and nnz < 2**31 else np.int64
    full_idx = np.empty(nnz, dtype=idx_dtype)
    full_val = np.empty(nnz, dtype=np.float32)
    # lower entries go first in their row, upper entries after them
    lo_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(lo_ptr))
    dest = np.arange(len(lo_rows), dtype=np.int64) + indptr[lo_rows]
    full_idx[dest] = lower.indices
    full_val[dest] = lower.data
    del dest, lo_rows, lower
    up_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    dest = np.arange(len(indices), dtype=np.int64) + lo_ptr[up_rows + 1]
    full_idx[dest] = indices
    full_val[dest] = data
    del dest, up_rows
    out = sp.csr_matrix((full_val, full_idx, full_ptr.astype(idx_dtype)), shape=(n, n))
    out.has_sorted_indices = True
    return out
