"""P×K batches over pseudo-label clusters, camera-aware (spec §1.5, §2).

    sampler = ClusterBatchSampler(labels, camids, num_instances=16, batch_size=256, iters=200,
                                  seed=1, epoch=3, camera_rule="cc")
    loader = DataLoader(ImageDataset(train, transform), batch_sampler=sampler)

Each batch is P = batch_size // K blocks of exactly K consecutive indices of one cluster: an
anchor drawn uniformly from the cluster, then K-1 others by ``camera_rule``:

- ``spread``: without replacement, first from cameras other than the anchor's, then from the
  anchor's camera, then (cluster too small) with replacement from the whole cluster.
- ``cc`` (Cluster Contrast's ``RandomMultipleGallerySampler``): the pool is the cluster's images
  in other cameras than the anchor's if there are any, else the cluster without the anchor; the
  K-1 are drawn from the pool without replacement when it holds >= K images, with replacement
  otherwise; a one-image cluster gives its image K times (the peer yields it once).

With ``camera_aware=False`` the cameras are ignored (``cc``: the peer's ``...NoCam`` sampler).
Per pass the clusters come in random order; a pass that starts inside a batch puts the batch's
clusters last, so a batch never repeats a cluster when there are >= P clusters (with fewer
clusters, repeats are unavoidable). Outliers (label -1) are never drawn. All randomness comes
from a local ``numpy.random.Generator`` seeded with (seed, epoch); the cost is O(iters·P·K²),
independent of the cluster sizes.
"""

from __future__ import annotations

import numpy as np

from ..errors import DmireidError

CAMERA_RULES = ("spread", "cc")


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64).ravel()


class ClusterBatchSampler:
    """Batches of dataset indices for ``DataLoader(batch_sampler=...)``; ``len()`` = ``iters``.

    Args: pseudo_labels (N,) int, -1 = outlier; camids (N,) int; num_instances K; batch_size
    (P = batch_size // K clusters per global batch); iters batches per epoch; seed, epoch: the
    random stream; camera_aware: use the cameras at all; camera_rule: ``cc`` (default, the recipe's)
    | ``spread`` (module docstring); rank, world_size: each rank yields blocks [rank·P/W, (rank+1)·P/W) of every global
    batch (P % world_size == 0).
    """

    def __init__(self, pseudo_labels, camids, num_instances: int, batch_size: int, iters: int, seed: int,
                 epoch: int = 0, camera_aware: bool = True, rank: int = 0, world_size: int = 1,
                 camera_rule: str = "cc"):
        labels, cams = _numpy(pseudo_labels), _numpy(camids)
        if len(labels) != len(cams):
            raise ValueError(f"{len(labels)} pseudo labels but {len(cams)} camera ids")
        self.K, self.P, self.iters = int(num_instances), int(batch_size) // max(int(num_instances), 1), int(iters)
        self._check(batch_size, rank, world_size)
        if not (labels >= 0).any():
            raise DmireidError("sampler: no clusters to sample from (every pseudo label is -1)")
        if camera_rule not in CAMERA_RULES:
            raise DmireidError(f"sampler: camera_rule {camera_rule!r} is not one of {', '.join(CAMERA_RULES)}")
        self.seed, self.epoch, self.camera_aware = int(seed), int(epoch), bool(camera_aware)
        self.camera_rule = camera_rule
        self.rank, self.world_size = int(rank), int(world_size)
        # indices grouped by cluster, then camera; per position the range of its camera run
        valid = np.flatnonzero(labels >= 0)
        self._order = valid[np.lexsort((valid, cams[valid], labels[valid]))]
        lab, cam = labels[self._order], cams[self._order]
        _, self._starts, self._sizes = np.unique(lab, return_index=True, return_counts=True)
        run_key = np.flatnonzero(np.r_[True, (lab[1:] != lab[:-1]) | (cam[1:] != cam[:-1])])
        run_len = np.diff(np.r_[run_key, len(lab)])
        self._run_start = np.repeat(run_key, run_len)
        self._run_end = self._run_start + np.repeat(run_len, run_len)
        self.num_clusters = len(self._sizes)

    def _check(self, batch_size, rank, world_size) -> None:
        if self.K < 1 or self.P < 1:
            raise DmireidError(f"sampler: batch_size ({batch_size}) must be >= num_instances ({self.K}) >= 1")
        if self.iters < 1:
            raise DmireidError(f"sampler: iters must be >= 1, got {self.iters}")
        if world_size < 1 or self.P % world_size:
            raise DmireidError(f"sampler: clusters per batch ({self.P}) must be a multiple of world_size ({world_size})")
        if not 0 <= rank < world_size:
            raise DmireidError(f"sampler: rank {rank} out of range 0..{world_size - 1}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.iters

    def __iter__(self):
        yield from self.batches().tolist()

    def batches(self) -> np.ndarray:
        """(iters, P/W·K) int64 dataset indices of this rank, K consecutive per cluster."""
        rng = np.random.default_rng([self.seed % 2**63, self.epoch % 2**63])
        blocks = self._blocks(self._cluster_stream(rng, self.iters * self.P), rng)
        share = self.P // self.world_size
        local = blocks.reshape(self.iters, self.P, self.K)[:, self.rank * share:(self.rank + 1) * share]
        return local.reshape(self.iters, share * self.K)

    def _cluster_stream(self, rng, count: int) -> np.ndarray:
        """(count,) cluster numbers: passes over all clusters in random order."""
        passes, filled = [], 0
        while filled < count:
            perm = rng.permutation(self.num_clusters)
            in_batch = filled % self.P
            if in_batch and self.num_clusters >= self.P:  # keep the open batch free of repeats
                seen = np.isin(perm, np.concatenate(passes)[-in_batch:])
                perm = np.concatenate([perm[~seen], perm[seen]])
            passes.append(perm)
            filled += len(perm)
        return np.concatenate(passes)[:count]

    def _blocks(self, clusters: np.ndarray, rng) -> np.ndarray:
        """(B, K) dataset indices: the anchor, then K-1 others by ``camera_rule``."""
        start, size = self._starts[clusters], self._sizes[clusters]
        anchor = start + (rng.random(len(clusters)) * size).astype(np.int64)  # sorted position
        if self.camera_aware:
            cs, ce = self._run_start[anchor] - start, self._run_end[anchor] - start
        else:
            cs, ce = np.zeros_like(size), size
        others = _cc_others if self.camera_rule == "cc" else _spread_others
        pos = others(rng, anchor - start, cs, ce, size, self.K - 1)  # (B, K-1) positions in the cluster
        picks = np.concatenate([anchor[:, None], start[:, None] + pos], axis=1)
        return self._order[picks]


def _spread_others(rng, a, cs, ce, size, k: int) -> np.ndarray:
    """Per row (anchor at position ``a`` of a cluster of ``size``, its camera run [cs, ce)): k
    positions, distinct other-camera ones first, then same-camera ones, then any with replacement."""
    other, same = size - (ce - cs), ce - cs - 1  # usable images besides the anchor
    ranks = _draw_without_replacement(rng, other, same, k)  # (B, k), -1 = none left
    q = ranks - other[:, None]  # index among the anchor's camera, anchor excluded
    pos_other = ranks + (ranks >= cs[:, None]) * (ce - cs)[:, None]
    pos_same = cs[:, None] + q + (q >= (a - cs)[:, None])
    pos = np.where(ranks < other[:, None], pos_other, pos_same)
    spare = (rng.random(ranks.shape) * size[:, None]).astype(np.int64)
    return np.where(ranks >= 0, pos, spare)


def _cc_others(rng, a, cs, ce, size, k: int) -> np.ndarray:
    """Cluster Contrast's rule (same arguments as :func:`_spread_others`): the pool is the other
    cameras' images if any, else the cluster without the anchor; k draws from it without
    replacement when it holds >= k + 1 images, with replacement otherwise; an empty pool (one-image
    cluster) repeats the anchor."""
    other = size - (ce - cs)
    pool = np.where(other > 0, other, size - 1)
    distinct = pool >= k + 1  # the peer: len(pool) >= num_instances
    unique = _draw_without_replacement(rng, np.where(distinct, pool, 0), np.zeros_like(pool), k)
    repeated = (rng.random((len(pool), k)) * np.maximum(pool, 1)[:, None]).astype(np.int64)
    ranks = np.where(distinct[:, None], unique, repeated)  # ranks within the pool
    pos_other = ranks + (ranks >= cs[:, None]) * (ce - cs)[:, None]  # skip the anchor's camera run
    pos_rest = ranks + (ranks >= a[:, None])  # skip the anchor
    pos = np.where((other > 0)[:, None], pos_other, pos_rest)
    return np.where((pool > 0)[:, None], pos, a[:, None])


def _draw_without_replacement(rng, first: np.ndarray, second: np.ndarray, k: int) -> np.ndarray:
    """Per row, up to k distinct ranks from [0, first + second): all of [0, first) is used up
    before [first, first + second) is touched; order within each part uniformly random.
    Returns (B, k) int64 with -1 where both parts are exhausted.

    Step t draws x uniformly among the still unused ranks of the current part and turns it into
    a rank by stepping past the earlier picks in ascending order (sequential sampling).
    """
    out = np.full((len(first), k), -1, dtype=np.int64)
    for t in range(k):
        limit = np.where(t < first, first - t, first + second - t)  # images still unused
        x = (rng.random(len(first)) * np.maximum(limit, 1)).astype(np.int64)
        for prev in np.sort(out[:, :t], axis=1).T:  # shift past earlier picks (ascending)
            x += prev <= x
        out[:, t] = np.where(limit > 0, x, -1)
    return out
