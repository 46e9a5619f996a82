"""Query/gallery retrieval metrics (spec §6): mAP, CMC and mINP, streamed over query chunks.

    evaluate(qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank=50) -> {"mAP", "cmc", "mINP", ...}
    pairwise_distance(qf, gf) -> Q×G float32 squared Euclidean distances

Protocol, per query: rank the gallery by distance; leave out gallery items with the query's pid
*and* camera; every other item with the query's pid is a true match, everything else (pid 0
distractors, other ids) a negative; queries without a true match left are skipped.

Ties (equal float32 distances) are handled as follows, and documented because they change results:

- **AP** is non-interpolated average precision exactly as ``sklearn.metrics.average_precision_score
  (y_true, -distance)`` computes it: a block of equal distances is one threshold, so every true
  match j counts the precision ``#matches with d <= d_j / #valid items with d <= d_j``, and
  AP is the mean of that over the query's true matches.
- **CMC** and **mINP** use the order of a *stable* sort of the distances (equal distances keep
  gallery order): the 0-based position of gallery item j is ``#valid items with d < d_j`` plus
  ``#valid items with d == d_j and a smaller gallery index``. CMC counts the first true match;
  mINP = mean over queries of ``#true matches / (1-based position of the last true match)``
  (Ye et al., AGW). ``cmc[k-1]`` is the fraction of queries whose first match is in the top k;
  it reaches 1 beyond the gallery size (the length is always ``max_rank``).

Streaming: the Q×G distance matrix is never materialised and nothing is sorted but each query's
true matches. Per chunk of B queries, one ``addmm`` gives the B×G distances, the matches'
distances are sorted per query (P per query, P small) and every gallery distance is bucketed
against them with one ``searchsorted``; a histogram of the buckets gives, for every true match,
the number of valid items at or below it. Ties with a non-match at the first or last match (rare
outside quantised data) are resolved on those rows alone. Cost: O(Q·G·d) for the matmul plus
O(Q·G·log P); memory: ~8 bytes per distance of one chunk (float32 distances + int32 buckets),
B chosen so the distance block is ~64 MB — never the Q×G matrix or an argsort of it.

Other distances plug in as a *distance-rows provider*: a callable ``rows(start, stop)`` returning
the (stop-start)×G float32 distances of query rows [start, stop) on the evaluation device
(``rerank=True`` wraps ``KReciprocalReranker.distance_rows`` from ``.rerank`` this way).
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from ..errors import DmireidError

log = logging.getLogger(__name__)

__all__ = ["evaluate", "pairwise_distance"]

#: Default size of one chunk's distance block (bytes); the working set of a chunk is ~4× this.
CHUNK_BYTES = 64 * 2**20

# A distance-rows provider: rows(start, stop) -> (stop-start)×G float32 tensor on the evaluation
# device, with the final query→gallery distances of query rows [start, stop) (smaller = closer).
DistanceRows = Callable[[int, int], torch.Tensor]


# ------------------------------------------------------------------------------------- distances
def _squared_distance(q: torch.Tensor, g: torch.Tensor, q_sq: torch.Tensor, g_sq: torch.Tensor) -> torch.Tensor:
    """``||q||² + ||g||² - 2 q·g`` (B×G float32) as torchreid computes it: one in-place addmm."""
    d = q_sq[:, None] + g_sq[None, :]
    return d.addmm_(q, g.T, beta=1, alpha=-2)


def _squared_norms(x: torch.Tensor, name: str) -> torch.Tensor:
    """Row-wise ``||x||²``; also the finiteness check of ``x`` (a NaN/inf element makes its row's
    norm non-finite), which is far cheaper than a separate pass over the features."""
    sq = (x * x).sum(dim=1)
    if not bool(torch.isfinite(sq).all()):
        raise DmireidError(f"{name} contains NaN or infinite values (or values too large for float32)")
    return sq


def _checked_norms(q: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q_sq, g_sq = _squared_norms(q, "query_features"), _squared_norms(g, "gallery_features")
    if float(q_sq.max()) + float(g_sq.max()) >= float(torch.finfo(torch.float32).max) / 8:
        raise DmireidError("features are too large for float32 distances (squared norms above 1e37)")
    return q_sq, g_sq


def pairwise_distance(query_features, gallery_features) -> torch.Tensor:
    """Squared Euclidean distances, Q×G float32 (``2 - 2·cos`` for unit rows).

    Computed as ``||q||² + ||g||² - 2·q·gᵀ`` in float32 (one matmul, O(Q·G·d)), the same
    arithmetic :func:`evaluate` uses per chunk, so a reference fed this matrix sees the same ties.
    Accepts numpy arrays or torch tensors (Q×d, G×d); returns a tensor on the query's device.
    """
    q = _as_features(query_features, "query_features", None)
    g = _as_features(gallery_features, "gallery_features", q.device)
    _check_dims(q, g)
    return _squared_distance(q, g, *_checked_norms(q, g))


def _euclidean_rows(q: torch.Tensor, g: torch.Tensor) -> DistanceRows:
    q_sq, g_sq = _checked_norms(q, g)

    def rows(start: int, stop: int) -> torch.Tensor:
        return _squared_distance(q[start:stop], g, q_sq[start:stop], g_sq)

    return rows


def _rerank_rows(q: torch.Tensor, g: torch.Tensor, k1: int, k2: int, lambda_value: float) -> DistanceRows:
    from .rerank import KReciprocalReranker

    reranker = KReciprocalReranker(q, g, k1=k1, k2=k2, lambda_value=lambda_value)
    device = q.device

    def rows(start: int, stop: int) -> torch.Tensor:
        # a copy: evaluation overwrites left-out entries in place
        d = torch.tensor(np.asarray(reranker.distance_rows(start, stop)), dtype=torch.float32, device=device)
        if not bool(torch.isfinite(d).all()):
            raise DmireidError(f"re-ranked distances of query rows {start}..{stop - 1} contain NaN or infinity")
        return d

    return rows


# ------------------------------------------------------------------------------------ validation
def _as_features(x, name: str, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise DmireidError(f"{name} must be a numeric array ({exc})") from None
    if t.ndim != 2:
        raise DmireidError(f"{name} must be a 2-D array (rows × feature dim), got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise DmireidError(f"{name} must be numeric, got dtype {t.dtype}")
    if t.shape[0] == 0:
        raise DmireidError(f"{name} is empty (0 rows)")
    return t.to(device=device if device is not None else t.device, dtype=torch.float32).contiguous()


def _check_dims(q: torch.Tensor, g: torch.Tensor) -> None:
    if q.shape[1] != g.shape[1]:
        raise DmireidError(f"query_features and gallery_features differ in feature dim ({q.shape[1]} vs {g.shape[1]})")


def _as_labels(x, name: str, expected: int, rows_of: str, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise DmireidError(f"{name} must be an integer array ({exc})") from None
    if t.ndim != 1:
        raise DmireidError(f"{name} must be a 1-D array, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise DmireidError(f"{name} must hold integers, got dtype {t.dtype}")
    if t.shape[0] != expected:
        raise DmireidError(f"{name} has {t.shape[0]} entries but {rows_of} has {expected} rows")
    return t.to(device=device, dtype=torch.int64)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DmireidError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------ API
def evaluate(query_features, gallery_features, query_pids, gallery_pids, query_cams, gallery_cams,
             max_rank: int = 50, chunk_size: int | None = None, rerank: bool = False, k1: int = 20,
             k2: int = 6, lambda_value: float = 0.3, device=None) -> dict:
    """mAP, CMC and mINP of query against gallery features (spec §6), streamed over query chunks.

    Args:
        query_features: Q×d, gallery_features: G×d (numpy arrays or torch tensors; used in
            float32 as given, normally L2-normalised rows).
        query_pids, gallery_pids, query_cams, gallery_cams: integer arrays of length Q / G.
            Gallery items with the query's pid and camera are left out; pid 0 (distractors) and
            any other pid are ordinary ids.
        max_rank: length of the returned CMC curve.
        chunk_size: queries per chunk; None picks it so one chunk's Q-rows × G distance block
            is about 64 MB (working set ~4× that). Results do not depend on it.
        rerank: use k-reciprocal re-ranked distances (Zhong et al. 2017; ``k1``, ``k2``,
            ``lambda_value``) from :mod:`dmireid.evaluation.rerank` instead of squared Euclidean.
        device: where to compute; None follows ``query_features`` (CPU for numpy input).

    Returns:
        ``{"mAP": float, "cmc": np.ndarray float64 (max_rank,), "mINP": float,
        "num_valid_queries": int}`` — fractions in [0, 1], averaged over the queries that keep
        at least one true match. ``cmc[k-1]`` = rank-k accuracy.

    Distance: squared Euclidean ``||q||² + ||g||² - 2 q·g`` in float32 (:func:`pairwise_distance`).
    AP follows ``sklearn.metrics.average_precision_score(y_true, -distance)`` (equal distances form
    one threshold); CMC and mINP use stable-sort order among equal distances (see module doc).

    Cost: O(Q·G·d) matmul + O(Q·G·log P) bucketing (P = true matches per query); memory
    O(chunk·G) — the Q×G matrix and its argsort are never built.

    Raises:
        DmireidError: mismatched shapes or lengths, non-finite features, no query with a match.
    """
    if device is None:
        device = query_features.device if isinstance(query_features, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    q = _as_features(query_features, "query_features", device)
    g = _as_features(gallery_features, "gallery_features", device)
    _check_dims(q, g)
    num_q, num_g = q.shape[0], g.shape[0]
    q_pids = _as_labels(query_pids, "query_pids", num_q, "query_features", device)
    g_pids = _as_labels(gallery_pids, "gallery_pids", num_g, "gallery_features", device)
    q_cams = _as_labels(query_cams, "query_cams", num_q, "query_features", device)
    g_cams = _as_labels(gallery_cams, "gallery_cams", num_g, "gallery_features", device)
    max_rank = _positive_int(max_rank, "max_rank")
    if chunk_size is None:
        chunk_size = max(1, CHUNK_BYTES // (4 * num_g))
    chunk_size = _positive_int(chunk_size, "chunk_size")

    if rerank:
        _checked_norms(q, g)
        rows = _rerank_rows(q, g, k1, k2, lambda_value)
    else:
        rows = _euclidean_rows(q, g)
    return _evaluate_rows(rows, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size)


# ------------------------------------------------------------------------------------ streaming
def _evaluate_rows(rows: DistanceRows, q_pids: torch.Tensor, g_pids: torch.Tensor, q_cams: torch.Tensor,
                   g_cams: torch.Tensor, max_rank: int, chunk_size: int) -> dict:
    """Accumulate the metrics over query chunks of ``rows`` (any distance-rows provider)."""
    device = q_pids.device
    num_q, num_g = q_pids.shape[0], g_pids.shape[0]
    # Gallery grouped by pid (stable: gallery order kept inside a pid) -> each query's same-pid items.
    g_order = torch.argsort(g_pids, stable=True)
    g_sorted = g_pids[g_order]
    same_start = torch.searchsorted(g_sorted, q_pids)
    same_count = torch.searchsorted(g_sorted, q_pids, right=True) - same_start

    # Per-query values (0 for skipped queries), summed once at the end: chunking cannot change results.
    ap_all = torch.zeros(num_q, dtype=torch.float64, device=device)
    inp_all = torch.zeros(num_q, dtype=torch.float64, device=device)
    first_hist = torch.zeros(max_rank + 1, dtype=torch.int64, device=device)
    num_valid = 0
    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        dist = rows(start, stop)
        if dist.shape != (stop - start, num_g):
            raise DmireidError(f"distance rows {start}..{stop - 1} have shape {tuple(dist.shape)}, "
                               f"expected {(stop - start, num_g)}")
        ap, inp, first, valid = _chunk_metrics(dist, g_order, same_start[start:stop], same_count[start:stop],
                                               q_cams[start:stop], g_cams)
        ap_all[start:stop] = ap
        inp_all[start:stop] = inp
        first_hist += torch.bincount(first[valid].clamp(max=max_rank), minlength=max_rank + 1)
        num_valid += int(valid.sum())
        log.debug("evaluated queries %d..%d of %d", start, stop - 1, num_q)
    if num_valid == 0:
        raise DmireidError("no query has a true match in the gallery (same pid, other camera); cannot evaluate")
    cmc = torch.cumsum(first_hist[:max_rank], 0).cpu().numpy().astype(np.float64) / num_valid
    return {"mAP": float(ap_all.sum()) / num_valid, "cmc": cmc, "mINP": float(inp_all.sum()) / num_valid,
            "num_valid_queries": num_valid}


def _chunk_metrics(dist: torch.Tensor, g_order: torch.Tensor, same_start: torch.Tensor, same_count: torch.Tensor,
                   q_cams: torch.Tensor, g_cams: torch.Tensor):
    """Per-query AP, INP and first-match position of one B×G chunk (overwrites ``dist``).

    Returns (ap, inp, first_position, valid), each of length B; entries of rows without a true
    match (``valid`` False) are 0.
    """
    device = dist.device
    b, num_g = dist.shape
    rows_b = torch.arange(b, device=device)

    # Same-pid gallery items of every query, as (row, gallery index) pairs in gallery order.
    row = torch.repeat_interleave(rows_b, same_count)
    first_pair = torch.cumsum(same_count, 0) - same_count
    gidx = g_order[same_start[row] + torch.arange(row.shape[0], device=device) - first_pair[row]]
    junk = g_cams[gidx] == q_cams[row]
    dist[row[junk], gidx[junk]] = float("inf")  # left out: beyond every finite distance
    row, gidx = row[~junk], gidx[~junk]
    pos_d = dist[row, gidx]

    # True matches sorted per query by (distance, gallery index): stable sorts keep gallery order.
    by_d = torch.argsort(pos_d, stable=True)
    perm = by_d[torch.argsort(row[by_d], stable=True)]
    row, gidx, pos_d = row[perm], gidx[perm], pos_d[perm]
    num_pos = torch.bincount(row, minlength=b)
    valid = num_pos > 0
    if not bool(valid.any()):
        zeros = torch.zeros(b, dtype=torch.float64, device=device)
        return zeros, zeros, torch.zeros(b, dtype=torch.int64, device=device), valid
    p_max = int(num_pos.max())
    col = torch.arange(row.shape[0], device=device) - (torch.cumsum(num_pos, 0) - num_pos)[row]
    inf = torch.tensor(float("inf"), device=device)
    s = torch.full((b, p_max), float("inf"), device=device)  # padded with +inf (rows ascending)
    s[row, col] = pos_d
    last_col = (num_pos - 1).clamp(min=0)
    s_first, s_last = s[:, 0], s.gather(1, last_col[:, None])[:, 0]

    # Bucket every gallery distance against the sorted matches plus the float just below the first
    # and the last match, so one histogram gives "#valid items <= x" for each of those values x.
    bounds = torch.cat([s, torch.nextafter(s_first, -inf)[:, None], torch.nextafter(s_last, -inf)[:, None]], 1)
    bounds = torch.sort(bounds, dim=1).values
    width = bounds.shape[1] + 1
    small = b * width < 2**31
    bucket = torch.searchsorted(bounds, dist, out_int32=small)  # #bounds < d  (B×G)
    bucket += (rows_b * width).to(bucket.dtype)[:, None]
    hist = torch.bincount(bucket.view(-1), minlength=b * width).view(b, width)
    del bucket
    le_count = torch.cumsum(hist, 1)  # le_count[r, m] = #valid items with d <= bounds[r, m]

    def count_le(values: torch.Tensor) -> torch.Tensor:  # values B×k, each one of the row's bounds
        return le_count.gather(1, torch.searchsorted(bounds, values.contiguous()))

    n_le = count_le(s)  # B×p_max, per true match: #valid items with d <= d_j
    tp_le = torch.searchsorted(s, s, right=True)  # #true matches with d <= d_j
    precision = tp_le.to(torch.float64) / n_le.clamp(min=1).to(torch.float64)
    precision = precision.masked_fill(torch.arange(p_max, device=device)[None, :] >= num_pos[:, None], 0.0)
    ap = precision.sum(1) / num_pos.clamp(min=1).to(torch.float64)

    # Stable order: position of a match = #valid with d < d_j + #valid with d == d_j and smaller index.
    lt_first = count_le(torch.nextafter(s_first, -inf)[:, None])[:, 0]
    lt_last = count_le(torch.nextafter(s_last, -inf)[:, None])[:, 0]
    eq_first = count_le(s_first[:, None])[:, 0] - lt_first
    eq_last = n_le.gather(1, last_col[:, None])[:, 0] - lt_last
    pos_eq_first = torch.searchsorted(s, s_first[:, None].contiguous(), right=True)[:, 0]  # tied with the first
    pos_eq_last = num_pos - torch.searchsorted(s, s_last[:, None].contiguous())[:, 0]  # tied with the last
    first = lt_first.clone()
    last = lt_last + pos_eq_last  # 1-based position of the last match if no negative ties with it
    # Negatives tied exactly with the first/last match: count those before it in gallery order.
    tied = valid & ((eq_first > pos_eq_first) | (eq_last > pos_eq_last))
    if bool(tied.any()):
        t_rows = torch.nonzero(tied)[:, 0]
        sub = dist[t_rows]
        ar = torch.arange(num_g, device=device)[None, :]
        j_first = torch.full((b,), num_g, dtype=torch.int64, device=device)
        j_last = torch.full((b,), num_g, dtype=torch.int64, device=device)
        starts = torch.cumsum(num_pos, 0) - num_pos
        j_first[valid] = gidx[starts[valid]]
        j_last[valid] = gidx[(starts + num_pos - 1)[valid]]
        neg_before_first = ((sub == s_first[t_rows, None]) & (ar < j_first[t_rows, None])).sum(1)
        # all tied matches precede the last one, so count tied items before it and drop the matches
        tied_before_last = ((sub == s_last[t_rows, None]) & (ar < j_last[t_rows, None])).sum(1)
        first[t_rows] += neg_before_first
        last[t_rows] += tied_before_last - (pos_eq_last[t_rows] - 1)
    inp = num_pos.to(torch.float64) / last.clamp(min=1).to(torch.float64)  # 0 where no match
    return ap, inp, first, valid
