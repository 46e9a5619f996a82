"""Camera-aware proxies: one proxy per (cluster, camera) and CAP's two losses.

Definitions follow CAP (Terminator8758/CAP-master ``reid/loss/CamAwareMemory.py``; file and line
citations in docs/recipe_semantics.md §6). Notation: f = B×d unit features, y = B cluster ids
(-1 ignored), c = B camera ids, P = M×d proxies (one per (cluster, camera) pair seen in the
epoch's data), τ = temperature, m = momentum (weight of the OLD value).

- init: P[(k, c)] = normalise(mean of cluster k's features taken by camera c).
- update: for each sample in batch order, P[(y, c)] <- normalise(m·P[(y, c)] + (1-m)·f)
  (CAP's ``ExemplarMemory.backward``), run as :class:`ClusterProxies`'s ``sequential`` rule
  over proxy ids.
- intra-camera loss: per camera present in the batch, the mean over its samples of the
  cross-entropy of f·P_cᵀ/τ against the sample's own proxy, P_c = the proxies of camera c; the
  per-camera means are SUMMED over the cameras of the batch.
- inter-camera (association) loss: positives = every proxy of the sample's cluster (all cameras,
  its own included), negatives = the ``hard_negatives`` proxies of other clusters most similar to
  f (fewer when fewer exist); loss_i = −(1/|Pos|)·Σ_{p∈Pos} log softmax_{Pos ∪ Neg}(f·Pᵀ/τ)_p;
  per-camera means summed over the cameras of the batch, like the intra term.

Losses run in float32 with autocast off; the memory is a buffer (no gradient, state_dict
round-trips); everything is vectorised (no per-sample loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._grouping import as_labels
from .proxies import ClusterProxies


def camera_centroids(features: torch.Tensor, labels, cameras) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised mean per (cluster, camera) pair present: N×d, N, N -> (M×d, M cluster, M camera).

    Pairs are ordered by (cluster, camera); labels -1 are ignored. Follows ``features``' device.
    """
    f = features.detach().float()
    y, c = as_labels(labels, f.device), as_labels(cameras, f.device)
    if y.numel() != f.shape[0] or c.numel() != f.shape[0]:
        raise ValueError(f"{f.shape[0]} features but {y.numel()} labels and {c.numel()} cameras")
    valid = y >= 0
    if not bool(valid.any()):
        empty = torch.zeros(0, dtype=torch.long, device=f.device)
        return f.new_zeros(0, f.shape[1]), empty, empty
    num_cameras = int(c.max()) + 1
    key = y[valid] * num_cameras + c[valid]
    pairs, slot = torch.unique(key, return_inverse=True)  # sorted: (cluster, camera) order
    sums = f.new_zeros(len(pairs), f.shape[1]).index_add_(0, slot, f[valid])
    return F.normalize(sums, dim=1), pairs // num_cameras, pairs % num_cameras


class CameraProxies(nn.Module):
    """Proxies per (cluster, camera) with CAP's intra- and inter-camera losses (module docstring).

    Buffers: ``memory.proxies`` M×d, ``proxy_cluster`` M, ``proxy_camera`` M and ``table``
    C×K_cam (proxy id of each (cluster, camera) pair, -1 where the cluster has no image of it).
    """

    def __init__(self, proxies: torch.Tensor, proxy_cluster: torch.Tensor, proxy_camera: torch.Tensor,
                 num_clusters: int, num_cameras: int, momentum: float = 0.2, temperature: float = 0.07,
                 hard_negatives: int = 50):
        super().__init__()
        self.memory = ClusterProxies(proxies, update="sequential", momentum=momentum, temperature=temperature)
        self.temperature, self.hard_negatives = float(temperature), int(hard_negatives)
        self.register_buffer("proxy_cluster", proxy_cluster.long().clone())
        self.register_buffer("proxy_camera", proxy_camera.long().clone())
        table = torch.full((max(num_clusters, 1), max(num_cameras, 1)), -1, dtype=torch.long, device=proxies.device)
        table[self.proxy_cluster, self.proxy_camera] = torch.arange(len(proxies), device=proxies.device)
        self.register_buffer("table", table)

    @classmethod
    def from_features(cls, features: torch.Tensor, labels, cameras, momentum: float = 0.2,
                      temperature: float = 0.07, hard_negatives: int = 50) -> "CameraProxies":
        """Initialised with :func:`camera_centroids` of the epoch's features (N×d, N, N)."""
        proxies, cluster, camera = camera_centroids(features, labels, cameras)
        y, c = as_labels(labels, proxies.device), as_labels(cameras, proxies.device)
        return cls(proxies, cluster, camera, int(y.max()) + 1 if y.numel() else 0,
                   int(c.max()) + 1 if c.numel() else 0, momentum, temperature, hard_negatives)

    @property
    def proxies(self) -> torch.Tensor:
        return self.memory.proxies

    def extra_repr(self) -> str:
        return (f"proxies={self.proxies.shape[0]}, cameras={self.table.shape[1]}, temperature={self.temperature}, "
                f"hard_negatives={self.hard_negatives}")

    def proxy_ids(self, y, cameras) -> torch.Tensor:
        """B cluster ids, B cameras -> B proxy ids (-1 where y is -1)."""
        y = as_labels(y, self.table.device)
        c = as_labels(cameras, self.table.device)
        ids = self.table[y.clamp(min=0), c]
        return torch.where(y >= 0, ids, torch.full_like(ids, -1))

    def _per_camera_weights(self, valid: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """B weights 1/n_c (n_c = valid samples of the sample's camera), 0 where not valid:
        Σ_i w_i·loss_i = Σ_c mean_{i∈c} loss_i."""
        counts = torch.zeros(self.table.shape[1], device=c.device).index_add_(0, c, valid.float())
        return torch.where(valid, 1.0 / counts[c].clamp(min=1.0), torch.zeros_like(counts[c]))

    def losses(self, f: torch.Tensor, y, cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """B×d (grad), B, B -> (intra-camera loss, inter-camera loss), scalars; gradient to f only."""
        with torch.autocast(device_type=f.device.type, enabled=False):
            f = f.float()
            y, c = as_labels(y, f.device), as_labels(cameras, f.device)
            own = self.proxy_ids(y, c)
            valid = own >= 0
            weight = self._per_camera_weights(valid, c)
            sims = f @ self.proxies.t()  # B×M
            logits = sims / self.temperature
            target = own.clamp(min=0)
            # intra: softmax over the proxies of the sample's own camera
            same_camera = (self.proxy_camera[None, :] == c[:, None]) | ~valid[:, None]  # no -inf rows
            intra_logp = F.log_softmax(logits.masked_fill(~same_camera, float("-inf")), dim=1)
            intra = -(intra_logp.gather(1, target[:, None]).squeeze(1) * weight).sum()
            # inter: every proxy of the cluster as positive, the hardest proxies of other clusters as negatives
            positive = self.proxy_cluster[None, :] == y[:, None]
            kept = positive | self._hard_negatives(sims.detach(), positive) | ~valid[:, None]
            inter_logp = F.log_softmax(logits.masked_fill(~kept, float("-inf")), dim=1)
            per_sample = -(inter_logp.masked_fill(~positive, 0.0).sum(1) / positive.sum(1).clamp(min=1))
            inter = (per_sample * weight).sum()
        return intra, inter

    def _hard_negatives(self, sims: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        """B×M mask of each row's ``hard_negatives`` most similar non-positive proxies (all of them
        when fewer exist; ties among equal similarities do not change the loss)."""
        k = min(self.hard_negatives, sims.shape[1])
        masked = sims.masked_fill(positive, float("-inf"))
        top = torch.topk(masked, k, dim=1).indices
        chosen = torch.zeros_like(positive).scatter_(1, top, True)
        return chosen & ~positive

    @torch.no_grad()
    def update(self, f: torch.Tensor, y, cameras) -> None:
        """Sequential momentum update of each sample's (cluster, camera) proxy, in batch order."""
        self.memory.update(f, self.proxy_ids(y, cameras))
