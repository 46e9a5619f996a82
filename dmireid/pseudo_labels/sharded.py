"""kNN lists split by query rows over the ranks of a process group; one process is one shard.

    dist, idx = knn_lists_sharded(x, k, backend="auto")   # every rank, with the same N×d x

Rank ``r`` of ``R`` searches the rows ``[⌊r·N/R⌋, ⌊(r+1)·N/R⌋)`` of the (already gathered)
features against all N rows on its own device — faiss (a GPU index on the current CUDA device
when faiss has GPUs), the blocked torch top-k on ``x``'s device, or faiss HNSW — orders them
(:func:`~dmireid.pseudo_labels.neighbours.neighbour_lists`) and recomputes their distances; the
lists are then all-gathered in rank order. Per rank: O(N²·d/R) search + O(N·k·d/R) distances;
the gather moves N·k·16 bytes (indices int64 + distances float64). Without a process group (or
with ``collective=False``) the caller is the only shard: the same code, no communication.

Why the split cannot change a list:

- A row's order depends only on its own candidates: (distance, index) with the point itself
  first, rows whose float32 gaps are below the error bound rescored in float64.
- The float32 search distances do depend on tiling and threads (measured on this project's CPU:
  MKL sgemm blocks of 16–256 rows with 2 threads differ in the last bit from 1 thread, faiss's
  OpenBLAS query tiles of 16–128 rows from tiles of 4,096), so they are never returned: every
  kept distance is recomputed in float64 as ``sum((x_i − x_j)²)`` (bit-identical to the
  rescoring's values), a function of the two rows alone.

So the exact backends return lists that are a function of the features only: the same for any
number of ranks, block size, thread count and exact backend (faiss and torch agree bit for bit).
The approximate ``faiss-hnsw`` graph is built on every rank and is not deterministic across
thread counts.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from dmireid import distributed as dist
from dmireid.errors import DmireidError
from dmireid.pseudo_labels.neighbours import (
    CANDIDATE_PAD,
    as_features,
    blocked_topk,
    faiss_candidates,
    neighbour_lists,
    resolve_backend,
)

logger = logging.getLogger(__name__)

#: float64 elements of one gathered block of :func:`list_sqdist` (16 MiB)
_SQDIST_BLOCK_ELEMENTS = 1 << 21


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[start, end)`` of rank ``rank`` among ``world`` (contiguous, sizes differ by ≤ 1)."""
    return n * rank // world, n * (rank + 1) // world


def list_sqdist(xn: np.ndarray, rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """float64 ``sum((x_i − x_j)²)`` for every entry ``j = idx[p, q]`` of the lists of ``rows``.

    ``xn`` N×d float32, ``rows`` (R,), ``idx`` R×k; returns R×k float64 (exactly 0 for the point
    itself and for duplicates). Each value is numpy's pairwise sum over one contiguous row of d
    squared differences, so it depends on the two rows only (not on R, k or the block).
    """
    out = np.empty(idx.shape, dtype=np.float64)
    r, k = idx.shape
    step = max(1, _SQDIST_BLOCK_ELEMENTS // max(1, k * xn.shape[1]))
    for s in range(0, r, step):
        g = xn[idx[s : s + step]].astype(np.float64)  # b×k×d
        g -= xn[rows[s : s + step], None, :]
        np.square(g, out=g)
        out[s : s + step] = g.sum(axis=2)
    return out


def knn_shard(
    x: torch.Tensor, xn: np.ndarray, k: int, backend: str, faiss, start: int, end: int, block_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ordered lists of the rows ``[start, end)`` among all N rows (self first).

    ``x`` is the N×d float32 tensor (the torch backend searches on its device), ``xn`` its numpy
    copy, ``backend``/``faiss`` from :func:`resolve_backend`. Returns ``(distances (end−start)×k
    float64, indices (end−start)×k int64)``.
    """
    n = x.shape[0]
    rows = np.arange(start, end, dtype=np.int64)
    if not len(rows):
        return np.zeros((0, k), dtype=np.float64), np.zeros((0, k), dtype=np.int64)
    c = min(n, k + CANDIDATE_PAD)
    if backend == "torch":
        cand, cdist, _ = blocked_topk(x, c, block_size, rows=rows)
    else:
        cand, cdist = faiss_candidates(faiss, xn, c, approximate=(backend == "faiss-hnsw"), rows=rows)
    if backend == "faiss-hnsw":
        bad = ((cand < 0) | (cand >= n)).sum(axis=1) > c - k
        if bad.any():  # the graph returned too few results: exact search for those rows
            logger.warning("knn: faiss-hnsw returned fewer than k results for %d rows; exact search for them",
                           int(bad.sum()))
            cand[bad], cdist[bad], _ = blocked_topk(x, c, block_size, rows=rows[bad])
    _, idx = neighbour_lists(x, xn, cand, cdist, k, True, block_size, exact=(backend != "faiss-hnsw"), rows=rows)
    return list_sqdist(xn, rows, idx), idx


def comm_device() -> torch.device:
    """Where the gathered lists travel: the current CUDA device under NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_same_problem(n: int, d: int, k: int) -> None:
    """DmireidError unless every rank passes features of the same shape and the same k."""
    shapes = dist.all_gather_cat(torch.tensor([[n, d, k]], dtype=torch.int64, device=comm_device())).cpu()
    if not bool((shapes == shapes[0]).all()):
        raise DmireidError(f"knn over ranks: every rank must pass the same features and k; got (N, d, k) = "
                           f"{[tuple(s) for s in shapes.tolist()]}")


def gather_lists(dist_part: np.ndarray, idx_part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ranks' shards concatenated in rank order (on every rank)."""
    device = comm_device()
    d = dist.all_gather_uneven(torch.from_numpy(dist_part).to(device)).cpu().numpy()
    i = dist.all_gather_uneven(torch.from_numpy(idx_part).to(device)).cpu().numpy()
    return d, i


def share_from_main(labels: np.ndarray) -> np.ndarray:
    """Rank 0's int64 array (same shape on every rank) on every rank; itself without a group."""
    if not dist.is_distributed():
        return labels
    return dist.broadcast(torch.from_numpy(np.ascontiguousarray(labels)).to(comm_device())).cpu().numpy()


def knn_lists_sharded(
    x: torch.Tensor, k: int, backend: str = "auto", block_size: int | None = None, collective: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every row (self first), searched by row shards over the ranks.

    Every rank of the process group must call it with the same validated N×d float32 tensor
    ``x`` (:func:`as_features`) and ``k``; each searches its shard and all receive the full
    lists. ``collective=False`` (or no process group) searches all rows here. Returns
    ``(distances N×k float64 = exact squared Euclidean, indices N×k int64)``, see the module
    docstring for why they do not depend on the number of ranks.
    """
    backend, faiss = resolve_backend(backend, x.device)
    n = x.shape[0]
    rank, world = (dist.rank(), dist.world_size()) if collective else (0, 1)
    if world > 1:
        _check_same_problem(n, x.shape[1], k)
    start, end = shard_bounds(n, rank, world)
    xn = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    dist_part, idx_part = knn_shard(x, xn, k, backend, faiss, start, end, block_size)
    if world == 1:
        return dist_part, idx_part
    logger.debug("knn: rank %d searched rows %d-%d of %d", rank, start, end, n)
    return gather_lists(dist_part, idx_part)


def knn_lists(
    x: torch.Tensor, k: int, backend: str = "auto", block_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn` on a validated tensor, distances in float64, in this process alone (the
    one-shard case of :func:`knn_lists_sharded`)."""
    return knn_lists_sharded(x, k, backend, block_size, collective=False)


def knn(
    features,
    k: int,
    backend: str = "auto",
    block_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of every row among all rows, the row itself first.

    Args:
        features: N×d float array or tensor (any device; rows need not be normalised).
        k: list length including the point itself, ``1 <= k <= N``.
        backend: ``"faiss"`` (exact brute force; GPU index when available), ``"torch"``
            (exact, blocked matmul + topk on the features' device), ``"faiss-hnsw"``
            (approximate HNSW graph, for very large N), ``"auto"`` = faiss when importable else
            torch.
        block_size: rows per distance block of the torch backend (default: ~256 MiB blocks).

    Returns:
        ``(distances, indices)``: N×k float32 squared Euclidean distances (recomputed exactly per
        pair, then rounded) and N×k int64 indices, ``indices[i, 0] == i`` and ``distances[i, 0]
        == 0``; the rest in (distance, index) order (ties → smaller index first; see
        :mod:`.neighbours`). Exact backends return identical indices and distances, whatever the
        block size.

    Complexity: exact backends O(N²·d) time; memory O(N·k) plus one block (torch) or faiss's
    internal tiles; rescoring adds O(R·(k+pad)·d) for the R rows with near-ties, the exact
    distances O(N·k·d).
    """
    x = as_features(features)
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or k > n:
        raise DmireidError(f"knn: k must be an integer in [1, N={n}], got {k!r}")
    dist_, idx = knn_lists(x, int(k), backend, block_size)
    return dist_.astype(np.float32), idx


__all__ = ["knn", "knn_lists", "knn_lists_sharded", "knn_shard", "shard_bounds", "list_sqdist", "gather_lists",
           "share_from_main", "comm_device"]
