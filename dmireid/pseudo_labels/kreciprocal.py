"""Sparse k-reciprocal encoding shared by the Jaccard distance (§3) and test-time re-ranking.

All functions work on neighbour lists ``rank`` (N×c int64, row ``i`` = ordered neighbours of ``i``)
and keep every N×N object sparse (CSR): the k-reciprocal sets, the expanded sets, the weight matrix
``V`` and its query expansion hold a few dozen entries per row, and the Jaccard step only visits
pairs of rows that share a non-zero column. There is no Python loop over N; loops run over blocks
of rows sized so that the temporary arrays stay around ``EMIT_BLOCK`` entries.

Set semantics (the peers' off-by-one conventions, spec §3 and §6):

- ``R(i, k)`` = ``rank[i, :k + 1]`` (silently shorter when ``rank`` has fewer columns);
- ``S(i)`` = { j ∈ R(i, k1) : i ∈ R(j, k1) };
- ``C(j)`` = { l ∈ R(j, h) : j ∈ R(l, h) }, h = round(k1 / 2); accepted for ``i`` when
  ``|C(j) ∩ S(i)| > 2/3·|C(j)|`` (the original ``S(i)``);
- ``S*(i)`` = S(i) ∪ accepted C(j), weights ``exp(−d)`` normalised over ``S*(i)``;
- query expansion: row ``i`` of ``V`` ← mean of rows ``rank[i, :k2]`` (skipped when ``k2 == 1``);
- ``m(i, j) = Σ_l min(V[i, l], V[j, l])``; Jaccard = ``1 − m / (2 − m)``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dmireid.pseudo_labels.neighbours import pair_dot

#: upper bound of temporary (pair, column) entries per processed block (~0.4 GB of temporaries)
EMIT_BLOCK = 1 << 23


def emit_target(n: int) -> int:
    """Temporary entries per block for an N-row problem: 256·N clipped to [2^18, EMIT_BLOCK], so
    the temporaries stay small next to the problem itself on small inputs."""
    return int(min(EMIT_BLOCK, max(1 << 18, 256 * n)))


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for every (s, c), vectorised. O(Σc).

    int32 when every value fits (halves the memory traffic of the hot gathers), else int64."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    excl = np.cumsum(counts) - counts
    base = np.asarray(starts, dtype=np.int64) - excl
    small = total < 2**31 and int((base + total).max()) < 2**31 and int(base.min()) > -(2**31)
    dtype = np.int32 if small else np.int64
    out = np.repeat(base.astype(dtype), counts)
    out += np.arange(total, dtype=dtype)
    return out


def row_blocks(cost: np.ndarray, target: int | None = None) -> list[tuple[int, int]]:
    """Split rows ``0..len(cost)`` into consecutive blocks of about ``target`` summed cost
    (default :func:`emit_target` of the number of rows)."""
    n = len(cost)
    target = emit_target(n) if target is None else target
    if n == 0:
        return []
    csum = np.cumsum(np.asarray(cost, dtype=np.int64))
    bounds = [0]
    while bounds[-1] < n:
        start = bounds[-1]
        base = csum[start - 1] if start > 0 else 0
        stop = int(np.searchsorted(csum, base + target, side="right"))
        bounds.append(min(n, max(stop, start + 1)))
    return list(zip(bounds[:-1], bounds[1:]))


def _sorted_member(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(queries), dtype=bool)
    pos = np.searchsorted(sorted_keys, queries)
    np.minimum(pos, len(sorted_keys) - 1, out=pos)
    return sorted_keys[pos] == queries


def reciprocal_sets(rank: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """k-reciprocal sets over the first ``length`` entries of every list.

    ``{ j ∈ rank[i, :length] : i ∈ rank[j, :length] }`` as a CSR structure ``(indptr N+1,
    indices)`` with the indices of each row sorted ascending. Time O(N·L·log(N·L)), memory O(N·L).
    """
    n = rank.shape[0]
    length = min(length, rank.shape[1])
    r = np.ascontiguousarray(rank[:, :length], dtype=np.int64)
    rows = np.repeat(np.arange(n, dtype=np.int64), length)
    fwd = rows * n + r.ravel()
    fwd_sorted = np.sort(fwd)
    member = _sorted_member(fwd_sorted, r.ravel() * n + rows)
    keys = np.sort(fwd[member])
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // n, minlength=n), out=indptr[1:])
    return indptr, keys % n


def expanded_sets(
    s_indptr: np.ndarray, s_indices: np.ndarray, c_indptr: np.ndarray, c_indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``S*(i) = S(i) ∪ {C(j) : j ∈ S(i), |C(j) ∩ S(i)| > 2/3·|C(j)|}`` as sorted CSR structure.

    ``S`` and ``C`` are CSR structures from :func:`reciprocal_sets` (indices sorted per row).
    Time O(T·log|S|) with T = Σ_i Σ_{j∈S(i)} |C(j)| (≤ N·k1·(h+1)), memory O(EMIT_BLOCK + |S*|).
    """
    n = len(s_indptr) - 1
    s_len = np.diff(s_indptr)
    c_len = np.diff(c_indptr)
    s_rows = np.repeat(np.arange(n, dtype=np.int64), s_len)
    s_keys = s_rows * n + s_indices  # sorted: rows ascending, columns ascending within rows
    pair_cost = c_len[s_indices]
    row_cost = np.bincount(s_rows, weights=pair_cost, minlength=n).astype(np.int64) + s_len
    out_keys = []
    for a, b in row_blocks(row_cost):
        p0, p1 = s_indptr[a], s_indptr[b]
        pi = s_rows[p0:p1]
        pj = s_indices[p0:p1]
        cnt = pair_cost[p0:p1]
        pos = ranges(c_indptr[pj], cnt)
        tp = np.repeat(np.arange(p1 - p0, dtype=np.int64), cnt)
        q = pi[tp] * n + c_indices[pos]
        inter = np.bincount(tp, weights=_sorted_member(s_keys, q), minlength=p1 - p0)
        accepted = inter > (2.0 / 3.0) * cnt
        keys = np.sort(np.concatenate([s_keys[p0:p1], q[accepted[tp]]]))
        distinct = np.empty(len(keys), dtype=bool)
        distinct[:1] = True
        np.not_equal(keys[1:], keys[:-1], out=distinct[1:])
        out_keys.append(keys[distinct])
    keys = np.concatenate(out_keys) if out_keys else np.zeros(0, dtype=np.int64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // n, minlength=n), out=indptr[1:])
    return indptr, keys % n


def pair_sqeuclid(
    x: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    rank: np.ndarray,
    rank_dist: np.ndarray | None,
    sqnorm: np.ndarray,
) -> np.ndarray:
    """Squared Euclidean distances (float64) of the pairs ``(rows, cols)``.

    Pairs found in the neighbour lists (``rank``/``rank_dist``, N×c) reuse the list's distance;
    the others are computed as ``||x_i||² + ||x_j||² − 2·x_i·x_j`` (float32 products, float64
    accumulation), which avoids gathering the features of most pairs."""
    n = rank.shape[0]
    d = np.empty(len(cols), dtype=np.float64)
    todo = np.ones(len(cols), dtype=bool)
    if rank_dist is not None:
        order = np.argsort(rank, axis=1)
        keys = (np.arange(n, dtype=np.int64)[:, None] * n + np.take_along_axis(rank, order, axis=1)).ravel()
        vals = np.take_along_axis(rank_dist, order, axis=1).ravel()
        del order
        q = rows * n + cols
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        found = keys[pos] == q
        d[found] = vals[pos[found]]
        todo = ~found
        del keys, vals, q, pos, found
    if todo.any():
        r, c = rows[todo], cols[todo]
        d[todo] = sqnorm[r] + sqnorm[c] - 2.0 * pair_dot(x, r, c)
    return d


def normalised_exp_weights(indptr: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Per-row ``exp(−d) / Σ exp(−d)`` (a softmax of ``−d``, shifted by the row minimum)."""
    n = len(indptr) - 1
    lens = np.diff(indptr)
    rows = np.repeat(np.arange(n, dtype=np.int64), lens)
    nonempty = lens > 0
    dmin = np.zeros(n, dtype=np.float64)
    if nonempty.any():
        dmin[nonempty] = np.minimum.reduceat(d, indptr[:-1][nonempty])
    w = np.exp(-(d - dmin[rows]))
    total = np.bincount(rows, weights=w, minlength=n)
    return w / total[rows]


def query_expand(v: sp.csr_matrix, rank: np.ndarray, k2: int) -> sp.csr_matrix:
    """Row ``i`` ← mean of rows ``rank[i, :k2]`` of ``v`` (sparse product, O(N·k2·nnz_row))."""
    if k2 == 1:
        return v
    n = v.shape[0]
    r = np.ascontiguousarray(rank[:, :k2], dtype=np.int64)
    m = r.shape[1]
    q = sp.csr_matrix(
        (np.full(n * m, 1.0 / m), r.ravel(), np.arange(0, n * m + 1, m, dtype=np.int64)),
        shape=(n, v.shape[0]),
    )
    out = (q @ v).tocsr()
    out.sort_indices()
    return out


def to_csc_with_positions(v: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Column-major copy of ``v`` (rows ascending inside each column) and the CSC position of
    every CSR entry: ``(col_indptr, col_rows, col_data, csr_to_csc)``."""
    n_rows, n_cols = v.shape
    order = np.argsort(v.indices, kind="stable")
    entry_rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(v.indptr))
    col_indptr = np.zeros(n_cols + 1, dtype=np.int64)
    np.cumsum(np.bincount(v.indices, minlength=n_cols), out=col_indptr[1:])
    csr_to_csc = np.empty(len(order), dtype=np.int64)
    csr_to_csc[order] = np.arange(len(order), dtype=np.int64)
    col_rows = entry_rows[order].astype(np.int32 if n_rows < 2**31 else np.int64)
    return col_indptr, col_rows, np.asarray(v.data[order], dtype=np.float64), csr_to_csc


def min_sums(
    row_indptr: np.ndarray,
    row_cols: np.ndarray,
    row_vals: np.ndarray,
    col_indptr: np.ndarray,
    col_rows: np.ndarray,
    col_vals: np.ndarray,
    n_out: int,
    start: np.ndarray | None = None,
) -> sp.csr_matrix:
    """``m[i, j] = Σ_l min(A[i, l], B[j, l])`` over the columns ``l`` that rows share.

    ``A`` is given row-wise (a CSR block: ``row_indptr``, ``row_cols``, ``row_vals``) and ``B``
    column-wise (``col_indptr`` over columns, ``col_rows`` ∈ [0, n_out), ``col_vals``). For every
    entry ``(i, l)`` of ``A`` the column list of ``l`` in ``B`` is visited from ``start`` (default:
    its beginning) to its end, and the per-pair minima are summed by scipy's C++ duplicate
    summation. Returns a canonical CSR (len(row_indptr)−1) × n_out matrix of the (positive) sums.
    Time O(E·log E_row), memory O(E), with E = the number of visited (entry, row) couples.
    """
    n_rows = len(row_indptr) - 1
    col_len = np.diff(col_indptr)
    if start is None:
        st = col_indptr[row_cols]
        cnt = col_len[row_cols]
    else:
        st = start
        cnt = col_indptr[row_cols + 1] - start
    pos = ranges(st, cnt)
    j = col_rows[pos]
    vals = col_vals[pos]
    np.minimum(vals, np.repeat(np.asarray(row_vals, dtype=np.float64), cnt), out=vals)
    entry_rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(row_indptr))
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(entry_rows, weights=cnt, minlength=n_rows).astype(np.int64), out=indptr[1:])
    if len(j) < 2**31 and n_out < 2**31:
        indptr = indptr.astype(np.int32)
        j = j.astype(np.int32, copy=False)
    m = sp.csr_matrix((vals, j, indptr), shape=(n_rows, n_out))
    # group the duplicates by two O(E + n) counting sorts instead of a comparison sort per row:
    # CSR -> CSC puts equal (row, column) pairs next to each other (rows ascending inside each
    # column), csr_sum_duplicates adds them in one pass, CSC -> CSR restores sorted rows
    c = m.tocsc()
    del m, vals, j
    c.has_sorted_indices = True
    c.sum_duplicates()
    out = c.tocsr()
    out.has_sorted_indices = True
    return out


def jaccard_from_min(m: np.ndarray) -> np.ndarray:
    """``max(0, 1 − m / (2 − m))`` in float64."""
    out = 1.0 - m / (2.0 - m)
    np.maximum(out, 0.0, out=out)
    return out
