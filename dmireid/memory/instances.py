"""Multi-instance proxies with global hard-negative mining (DMI MIP, spec §4.3).

Memory Q: C×K×d (K = K_mip instance slots per cluster), a buffer. For a batch f (B×d), y (B):

    s[i, c, k] = f_i·Q[c, k] / τ
    logit[i, c] = min_k s[i, c, k]  if c == y_i   (hardest own instance: the positive)
                  max_k s[i, c, k]  otherwise     (each other cluster's most similar instance)
    L_MIP = cross-entropy(logit, y)   (optionally only the ``negatives_topk`` largest negatives)

Computed in float32 over chunks of clusters, so at most ~16M similarity values exist at once
(the reductions keep only indices for backward, so each chunk's B×c×K block is freed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DmireidError
from ._grouping import as_labels, group_batch

_CHUNK_ELEMENTS = 1 << 24


def _rand(n, generator: torch.Generator | None, device: torch.device, shape=None) -> torch.Tensor:
    shape = (n,) if shape is None else shape
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


class MultiInstanceProxies(nn.Module):
    """K_mip instance proxies per cluster, buffer ``instances`` C×K×d (see the module docstring)."""

    def __init__(self, instances: torch.Tensor, temperature: float = 0.05, negatives_topk: int = 0):
        super().__init__()
        if instances.dim() != 3:
            raise ValueError(f"instances must be C×K×d, got shape {tuple(instances.shape)}")
        self.temperature = float(temperature)
        self.negatives_topk = int(negatives_topk)
        self.register_buffer("instances", instances.detach().float().clone())

    @property
    def num_clusters(self) -> int:
        return self.instances.shape[0]

    @property
    def num_instances(self) -> int:
        return self.instances.shape[1]

    def extra_repr(self) -> str:
        c, k, d = self.instances.shape
        return f"clusters={c}, instances={k}, dim={d}, temperature={self.temperature}, negatives_topk={self.negatives_topk}"

    def logits(self, f: torch.Tensor, y) -> torch.Tensor:
        """B×d, B labels -> B×C float32: own cluster min_k, every other cluster max_k, over τ."""
        y = as_labels(y, f.device)
        Q = self.instances
        num, k, d = Q.shape
        chunk = max(1, _CHUNK_ELEMENTS // max(1, f.shape[0] * k))
        outs = []
        with torch.autocast(device_type=f.device.type, enabled=False):
            f = f.float()
            for c0 in range(0, num, chunk):
                q = Q[c0:c0 + chunk]
                s = (f @ q.reshape(-1, d).t()).view(f.shape[0], q.shape[0], k)
                own = y[:, None] == torch.arange(c0, c0 + q.shape[0], device=f.device)[None, :]
                # max/min(dim) keep only indices for backward, so s is freed after this chunk
                outs.append(torch.where(own, s.min(dim=2).values, s.max(dim=2).values))
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
            return out / self.temperature

    def loss(self, f: torch.Tensor, y, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar L_MIP (labels -1 ignored); gradient to f only. ``allowed``: B×C bool, the
        clusters each row may see (None: all)."""
        y = as_labels(y, f.device)
        logits = self.logits(f, y)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        topk = self.negatives_topk
        if topk <= 0 or topk >= self.num_clusters - 1:
            return F.cross_entropy(logits, y, ignore_index=-1)
        own_index = y.clamp(min=0)[:, None]
        positive = logits.gather(1, own_index)
        negatives = logits.scatter(1, own_index, float("-inf")).topk(topk, dim=1).values
        target = torch.where(y >= 0, 0, -1)
        return F.cross_entropy(torch.cat([positive, negatives], dim=1), target, ignore_index=-1)

    @torch.no_grad()
    def replace(self, f_momentum: torch.Tensor, y, generator: torch.Generator | None = None) -> None:
        """Overwrite the K slots of every cluster present in the batch with its batch features.

        For a cluster with n batch samples, slot k gets sample π[k mod n] for a random permutation
        π of them: n == K is a random permutation, n > K a random subset without repeats, n < K
        every sample ⌊K/n⌋ or ⌈K/n⌉ times. Clusters not in the batch are untouched. Randomness
        from ``generator`` (any device; default: the global RNG of f's device). f_momentum: B×d.
        """
        f = f_momentum.detach().to(self.instances.dtype)
        g = group_batch(as_labels(y, f.device), self.num_clusters)
        if g.num_groups == 0:
            return
        keys = _rand(g.order.numel(), generator, f.device)
        by_key = torch.argsort(keys)
        shuffled = by_key[torch.argsort(g.group[by_key], stable=True)]  # grouped, random within group
        slots = torch.arange(self.num_instances, device=f.device)
        source = g.order[shuffled[g.start[:, None] + slots[None, :] % g.counts[:, None]]]  # U×K batch rows
        self.instances.index_copy_(0, g.labels, f[source])

    @staticmethod
    def sample_members(labels, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """C×k int64 row indices: k members per cluster 0..C-1, uniform with replacement.

        ``labels``: N (tensor or numpy, -1 ignored). Every cluster id below max+1 must have a member.
        """
        device = generator.device if generator is not None else torch.device("cpu")
        y = as_labels(labels, device)
        rows = torch.nonzero(y >= 0).squeeze(1)
        if rows.numel() == 0:
            raise DmireidError("cannot build multi-instance proxies: every sample is an outlier (label -1)")
        order = rows[torch.argsort(y[rows], stable=True)]
        num = int(y.max()) + 1
        counts = torch.bincount(y[rows], minlength=num)
        if bool((counts == 0).any()):
            empty = int(torch.nonzero(counts == 0)[0])
            raise DmireidError(f"cannot build multi-instance proxies: cluster {empty} has no member "
                               f"(labels must be 0..C-1 with no gaps)")
        starts = torch.cumsum(counts, 0) - counts
        offsets = (_rand(None, generator, device, shape=(num, k)) * counts[:, None]).long()
        offsets = torch.minimum(offsets, counts[:, None] - 1)
        return order[starts[:, None] + offsets]

    @classmethod
    def from_features(cls, features: torch.Tensor, labels, k: int, generator: torch.Generator | None = None,
                      temperature: float = 0.05, negatives_topk: int = 0) -> "MultiInstanceProxies":
        """Q[c] = features of k members drawn uniformly with replacement from cluster c.

        features: N×d (unit rows, e.g. θ' eval features), labels: N (-1 ignored).
        """
        members = cls.sample_members(labels, k, generator).to(features.device)
        return cls(features[members], temperature=temperature, negatives_topk=negatives_topk)
