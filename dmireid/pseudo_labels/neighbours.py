"""Exact (and optionally approximate) k-nearest-neighbour search with a deterministic order.

Every backend follows the same two steps:

1. *Candidates*: the ``k + pad`` nearest rows by float32 squared Euclidean distance, from faiss
   (brute-force ``faiss.knn`` on the caller's array — no index copy of the data; a
   ``GpuIndexFlatL2`` when faiss sees a GPU and ``torch.cuda`` is available), from a
   blocked torch matmul + ``topk`` (works on CUDA tensors), or from a faiss HNSW graph
   (approximate).
2. *Ordering*: each list is ordered by **(distance, index)**, i.e. ties are broken by the smaller
   index, and the query point itself is put at position 0 (even when exact duplicates with a
   smaller index share its distance 0), followed by the first ``k - 1`` other points. Rows where
   two of the relevant float32 distances are closer than the search error bound
   (:func:`search_tolerance`, 1e-5 for unit features: ties, duplicates, near-ties) are
   *rescored*: their candidates' distances are recomputed in float64 as ``sum((x_i - x_j) ** 2)``
   (exactly 0 for the point itself and for exact duplicates) before ordering; where the last kept
   distance is within that bound of the window's end (a tie group or a rounding error could
   reach past the window, e.g. more than ``k + pad`` exact duplicates) the window is doubled with
   an exact search of those rows until it is safe.

Hence the exact backends return identical neighbour lists (same order, not only the same sets),
equal to what a stable ``argsort`` of each dense float64 distance row gives with the point itself
moved to the front (the test suite's reference), as long as float32 search errors stay below the
bound (measured < 1e-6 on 2048-d unit features). Each row's list depends only on that row's
candidates, so the rows may be searched in any split (:mod:`.sharded` splits them over ranks).
:func:`neighbour_lists` returns the search's float32 distances for unambiguous rows and the
float64 recomputation for rescored ones; :mod:`.sharded` (``knn``, the labeler) then recomputes
every kept distance in float64, because float32 search values depend on BLAS tiling and threads.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from dmireid.errors import DmireidError

logger = logging.getLogger(__name__)

#: extra candidates fetched by the float32 search beyond k (the window checked for ties)
CANDIDATE_PAD = 8
#: elements (rows x columns) of one float32 distance block of the torch backend (256 MiB)
_TORCH_BLOCK_ELEMENTS = 1 << 26
#: float64 elements of one gathered block during rescoring (16 MiB)
_RESCORE_BLOCK_ELEMENTS = 1 << 21

BACKENDS = ("auto", "faiss", "torch", "faiss-hnsw")


def _faiss():
    try:
        import faiss  # noqa: PLC0415
    except Exception:  # ImportError, or a broken binary wheel
        return None
    return faiss


def as_features(features, name: str = "features") -> torch.Tensor:
    """Validate ``features`` (numpy array or tensor, N×d) and return a float32 2-D tensor.

    The tensor stays on its device. Raises :class:`DmireidError` on a wrong shape, an empty input
    or a non-finite value.
    """
    if isinstance(features, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    elif isinstance(features, torch.Tensor):
        x = features.detach().to(torch.float32)
    else:
        try:
            x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        except (TypeError, ValueError) as exc:
            raise DmireidError(f"{name}: expected an N×d array or tensor, got {type(features).__name__}") from exc
    if x.dim() != 2:
        raise DmireidError(f"{name}: expected an N×d matrix, got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DmireidError(f"{name}: empty matrix of shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x.sum(dim=1)).all()):  # NaN/inf anywhere makes its row sum non-finite
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise DmireidError(f"{name}: {bad} row(s) contain NaN or inf values")
    return x.contiguous()


def default_block_size(n: int) -> int:
    """Rows per torch distance block so that one block is about 256 MiB of float32."""
    return int(min(max(_TORCH_BLOCK_ELEMENTS // max(n, 1), 16), max(n, 1)))


def blocked_topk(
    x: torch.Tensor,
    k: int,
    block_size: int | None = None,
    with_max: bool = False,
    rows: np.ndarray | None = None,
    progress=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The ``k`` smallest float32 squared distances of every row of ``x`` (or of ``rows``) to all
    rows, by a blocked matmul + ``topk`` on ``x``'s device.

    One streamed pass over blocks of ``block_size × N`` distances ``||x_i||² + ||x_j||² −
    2·x_i·x_j`` (TF32 disabled on CUDA); memory O(R·k + block_size·N), time O(R·N·d). With
    ``with_max`` it also returns, per row, the column of the largest squared distance ``d_ij²``
    (the re-ranker's row normalisation).

    Returns ``(indices R×k int64, distances R×k float32, argmax R int64 or None)``, unordered.
    """
    n = x.shape[0]
    k = min(k, n)
    rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    bs = block_size or default_block_size(n)
    sq = (x * x).sum(dim=1)
    out_i = np.empty((len(rows), k), dtype=np.int64)
    out_d = np.empty((len(rows), k), dtype=np.float32)
    arg_max = np.empty(len(rows), dtype=np.int64) if with_max else None
    tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        for s in range(0, len(rows), bs):
            e = min(s + bs, len(rows))
            r = torch.as_tensor(rows[s:e], device=x.device)
            d = torch.addmm(sq[r, None] + sq[None, :], x[r], x.T, alpha=-2.0)
            top = torch.topk(d, k, dim=1, largest=False, sorted=False)
            out_i[s:e] = top.indices.cpu().numpy()
            out_d[s:e] = top.values.cpu().numpy()
            if with_max:
                arg_max[s:e] = torch.argmax(d * d, dim=1).cpu().numpy()
            del d, top
            if progress is not None:
                progress.update(e - s)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return out_i, out_d, arg_max


def pair_sqdist(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float64 ``sum((x[rows] − x[cols])²)`` for aligned index arrays, in bounded-memory chunks.

    Exactly 0 for identical rows; identical inputs give bit-identical outputs (numpy's pairwise
    sum over each contiguous row), which is what makes tie-breaking deterministic.
    """
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    out = np.empty(rows.shape[0], dtype=np.float64)
    step = max(1, _RESCORE_BLOCK_ELEMENTS // x.shape[1])
    for s in range(0, rows.shape[0], step):
        a = x[rows[s : s + step]].astype(np.float64)
        a -= x[cols[s : s + step]]
        np.square(a, out=a)
        out[s : s + step] = a.sum(axis=1)
    return out


def pair_dot(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Dot products ``x[rows]·x[cols]`` (float32 products, float64 accumulation), bounded memory."""
    out = np.empty(len(rows), dtype=np.float64)
    step = max(1, _RESCORE_BLOCK_ELEMENTS // x.shape[1])
    for s in range(0, len(rows), step):
        out[s : s + step] = np.einsum(
            "ij,ij->i", x[rows[s : s + step]], x[cols[s : s + step]], dtype=np.float64
        )
    return out


def search_tolerance(x: np.ndarray) -> float:
    """Distance gap below which two float32 search distances are not trusted to be ordered right.

    10× the largest float32 error measured on 2048-d unit features (faiss and torch: < 1e-6),
    scaled with the squared norms and with sqrt(d / 2048) above 2048 dimensions.
    """
    scale = max(1.0, float(np.einsum("ij,ij->i", x, x).max()))
    return 1e-5 * scale * max(1.0, (x.shape[1] / 2048.0) ** 0.5)


def _order(
    n: int, rows: np.ndarray, cand: np.ndarray, dist: np.ndarray, k: int, self_first: bool, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort candidate lists by (distance, index), keep ``k`` (self first when asked) and flag the
    rows whose kept order or set could change under errors of ``tol / 2`` in ``dist``."""
    r, c = cand.shape
    missing = (cand < 0) | (cand >= n)
    if self_first:
        missing |= cand == rows[:, None]
    dd = np.where(missing, np.inf, dist.astype(np.float64))
    key = np.where(missing, n, cand)
    order = np.lexsort((key, dd), axis=1)
    sd = np.take_along_axis(dd, order, axis=1)
    si = np.take_along_axis(key, order, axis=1)
    m = k - 1 if self_first else k  # entries taken from the candidates
    out_d = np.empty((r, k), dtype=np.float64)
    out_i = np.empty((r, k), dtype=np.int64)
    if self_first:
        out_d[:, 0] = 0.0
        out_i[:, 0] = rows
        out_d[:, 1:] = sd[:, :m]
        out_i[:, 1:] = si[:, :m]
    else:
        out_d[:] = sd[:, :m]
        out_i[:] = si[:, :m]
    if m == 0:
        return out_d, out_i, np.zeros(r, dtype=bool)
    upto = min(m + 1, c)
    with np.errstate(invalid="ignore"):
        gaps = np.diff(sd[:, :upto], axis=1)
        ambiguous = ~(gaps >= tol).all(axis=1)  # NaN (inf − inf) counts as ambiguous
        ambiguous |= ~np.isfinite(sd[:, m - 1])
        if c < n:
            last = np.where(np.isfinite(sd), sd, -np.inf).max(axis=1)
            ambiguous |= ~(last - sd[:, m - 1] >= tol)
    return out_d, out_i, ambiguous


def rescore(
    x: np.ndarray, rows: np.ndarray, candidates: np.ndarray, k: int, self_first: bool, tol: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order candidate lists by exact (float64) squared distance, then index; keep ``k`` per row.

    ``rows`` (R,) are the query row ids and ``candidates`` R×c their candidate lists (entries < 0
    or ≥ N are missing). With ``self_first`` row ``i`` becomes ``[i] + the first k−1 other
    candidates``, otherwise the first ``k`` candidates (what a stable full sort of the distance
    row gives). Returns ``(distances R×k float64, indices R×k int64, widen R bool)``: ``widen``
    flags rows where a point outside the candidate window could be within ``tol`` of the last
    kept one. Time O(R·c·d), memory O(block).
    """
    n = x.shape[0]
    r, c = candidates.shape
    out_d = np.empty((r, k), dtype=np.float64)
    out_i = np.empty((r, k), dtype=np.int64)
    widen = np.zeros(r, dtype=bool)
    step = max(1, _RESCORE_BLOCK_ELEMENTS // max(1, c * x.shape[1]))
    for s in range(0, r, step):
        e = min(s + step, r)
        cand = candidates[s:e]
        q = np.asarray(rows[s:e], dtype=np.int64)
        safe = np.where((cand < 0) | (cand >= n), q[:, None], cand)
        dist = pair_sqdist(x, np.repeat(q, c), safe.ravel()).reshape(e - s, c)
        out_d[s:e], out_i[s:e], _ = _order(n, q, cand, dist, k, self_first, 0.0)
        if c < n:
            m = k - 1 if self_first else k
            if m > 0:
                missing = (cand < 0) | (cand >= n)
                last = np.where(missing, -np.inf, dist).max(axis=1)
                kth = out_d[s:e, k - 1]
                widen[s:e] = ~(last - kth >= tol)
    return out_d, out_i, widen


def neighbour_lists(
    x: torch.Tensor,
    xn: np.ndarray,
    candidates: np.ndarray,
    cand_dist: np.ndarray | None,
    k: int,
    self_first: bool,
    block_size: int | None = None,
    exact: bool = True,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Final ordered lists from float32 candidates (see the module docstring).

    ``candidates`` (R×c) belong to the query rows ``rows`` (global ids, default all N rows).
    Rows whose float32 order is unambiguous keep the search distances; the others are rescored
    in float64, and their candidate window is doubled (exact torch search of those rows only)
    while a point outside it could still tie with the last kept one. With ``exact=False``
    (approximate candidates) no window is widened. Each row's result depends only on its own
    candidates, so any split of the rows gives the same lists. Returns ``(distances R×k float64,
    indices R×k int64)``.
    """
    n = xn.shape[0]
    rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    pos = np.arange(len(rows), dtype=np.int64)  # positions in the output
    tol = search_tolerance(xn)
    c = candidates.shape[1]
    if cand_dist is None:
        dist, idx, todo = rescore(xn, rows, candidates, k, self_first, tol)
        todo = pos[todo] if exact else pos[:0]
    else:
        dist, idx, amb = _order(n, rows, candidates, cand_dist, k, self_first, tol)
        amb_pos = pos[amb]
        todo = pos[:0]
        if len(amb_pos):
            d2, i2, w2 = rescore(xn, rows[amb_pos], candidates[amb_pos], k, self_first, tol)
            dist[amb_pos], idx[amb_pos] = d2, i2
            todo = amb_pos[w2] if exact else pos[:0]
        logger.debug("knn: %d of %d rows rescored in float64", len(amb_pos), len(rows))
    while len(todo) and c < n:
        c = min(n, 2 * c)
        logger.debug("knn: widening the candidate window of %d rows to %d", len(todo), c)
        cand, _, _ = blocked_topk(x, c, block_size, rows=rows[todo])
        d2, i2, w2 = rescore(xn, rows[todo], cand, k, self_first, tol)
        dist[todo], idx[todo] = d2, i2
        todo = todo[w2]
    return dist, idx


def _rows_of(xn: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``xn[rows]`` as a view when ``rows`` is a contiguous range (a rank's shard), else a copy."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and (np.diff(rows) == 1).all():
        return xn[rows[0] : rows[-1] + 1]
    return np.ascontiguousarray(xn[rows])


def faiss_candidates(
    faiss, xn: np.ndarray, c: int, approximate: bool, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``c`` nearest rows of ``xn`` (float32 squared distances, unordered ties) for the query
    rows ``rows`` (default all): exact brute force (a ``GpuIndexFlatL2`` on the current CUDA
    device when faiss has GPUs) or an HNSW graph. Returns ``(indices R×c int64, distances R×c)``."""
    n, d = xn.shape
    queries = xn if rows is None else _rows_of(xn, np.asarray(rows, dtype=np.int64))
    if approximate:
        index = faiss.IndexHNSWFlat(d, 32)
        index.hnsw.efConstruction = 80
        index.add(xn)
        index.hnsw.efSearch = max(2 * c, 64)
        dist, idx = index.search(queries, c)
        return idx.astype(np.int64, copy=False), dist
    use_gpu = False
    try:
        use_gpu = faiss.get_num_gpus() > 0 and torch.cuda.is_available()
    except AttributeError:
        use_gpu = False
    if use_gpu:  # this rank's GPU (torchrun: the trainer set it from LOCAL_RANK)
        res = faiss.StandardGpuResources()
        config = faiss.GpuIndexFlatConfig()
        config.device = torch.cuda.current_device()
        index = faiss.GpuIndexFlatL2(res, d, config)
        index.add(xn)
        dist, idx = index.search(queries, c)
    elif hasattr(faiss, "knn"):
        dist, idx = faiss.knn(queries, xn, c)  # brute force on our array: no index copy of the data
    else:  # older faiss
        index = faiss.IndexFlatL2(d)
        index.add(xn)
        dist, idx = index.search(queries, c)
    return idx.astype(np.int64, copy=False), dist


def resolve_backend(backend: str, device: torch.device | None = None):
    """``(name, faiss module or None)`` for a backend argument; DmireidError if unusable.

    ``auto`` = faiss when importable, except for features on a CUDA ``device`` when faiss has no
    GPU (a CPU-only faiss would move the search off the GPU): then the torch backend.
    """
    if backend not in BACKENDS:
        raise DmireidError(f"knn backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    faiss = _faiss() if backend in ("auto", "faiss", "faiss-hnsw") else None
    if backend in ("faiss", "faiss-hnsw") and faiss is None:
        raise DmireidError(
            f"knn backend {backend!r}: faiss is not importable (pip install faiss-cpu, or use backend='torch')"
        )
    if backend == "auto":
        on_gpu = device is not None and torch.device(device).type == "cuda"
        faiss_gpu = faiss is not None and getattr(faiss, "get_num_gpus", lambda: 0)() > 0
        backend = "faiss" if faiss is not None and (faiss_gpu or not on_gpu) else "torch"
    return backend, faiss


def round_half(k1: int) -> int:
    """``round(k1 / 2)`` as numpy rounds it (half to even), the peers' expansion size."""
    return int(np.around(k1 / 2.0))


__all__ = ["as_features", "blocked_topk", "faiss_candidates", "rescore", "neighbour_lists", "pair_sqdist",
           "pair_dot", "round_half", "resolve_backend", "search_tolerance"]
