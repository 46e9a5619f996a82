"""Cluster proxies (CC, spec §4.1) and discrepant proxy sets (DMI DCP, spec §4.2).

Notation: f = B×d unit features, y = B int64 pseudo labels (-1 = ignored), P = C×d proxies,
τ = temperature, m = momentum = weight of the OLD value: P[c] <- normalise(m·P[c] + (1-m)·x).
Proxies are buffers (no gradient; state_dict round-trips); gradients flow to f only. Logits and
losses are computed in float32 with autocast disabled (B×C×d is small).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DmireidError
from ._grouping import BatchGroups, as_labels, group_batch

UPDATE_RULES = ("sequential", "hard", "mean")  # the one list of proxy update rules (config keys use it)
DCP_MARGINS = (0.2, 0.0)  # DiscrepantProxies' default margins (the recipe's, = memory.dcp_margins)


def cluster_centroids(features: torch.Tensor, labels) -> torch.Tensor:
    """L2-normalised mean feature per cluster: N×d, N labels -> C×d float32 (C = max label + 1).

    Labels -1 are ignored; a cluster id with no member gives a zero row; no clustered sample
    gives a 0×d tensor. Follows the device of ``features``.
    """
    f = features.detach().float()
    y = as_labels(labels, f.device)
    if y.numel() != f.shape[0]:
        raise ValueError(f"{f.shape[0]} features but {y.numel()} labels")
    num = int(y.max()) + 1 if y.numel() else 0
    if num <= 0:
        return f.new_zeros(0, f.shape[1])
    valid = y >= 0
    # route outliers to an extra row that is dropped (no boolean indexing, no extra sync)
    target = torch.where(valid, y, torch.full_like(y, num))
    sums = f.new_zeros(num + 1, f.shape[1]).index_add_(0, target, f)
    return F.normalize(sums[:num], dim=1)


def _check_rule(rule: str) -> str:
    if rule not in UPDATE_RULES:
        raise DmireidError(f"memory update rule {rule!r} is not one of {', '.join(UPDATE_RULES)}")
    return rule


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


class ClusterProxies(nn.Module):
    """One proxy per cluster (Cluster Contrast), buffer ``proxies`` C×d.

    update rules (all vectorised, applied under no_grad with f detached):
      ``sequential`` — for each sample in batch order, P[y] <- normalise(m·P[y] + (1-m)·f); run
        as max_count steps, step j updating every cluster present with its j-th sample in batch
        order (exact for any batch order: each step touches each cluster at most once).
      ``hard`` — per cluster present, one update with its least similar sample (min f·P[y],
        P before the update; ties: the first in batch order).
      ``mean`` — per cluster present, one update with the plain mean of its samples (the mean is
        not re-normalised before the momentum step; the result is normalised after it).
    """

    def __init__(self, centroids: torch.Tensor, update: str = "sequential", momentum: float = 0.1,
                 temperature: float = 0.05):
        super().__init__()
        if centroids.dim() != 2:
            raise ValueError(f"centroids must be C×d, got shape {tuple(centroids.shape)}")
        self.rule = _check_rule(update)
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.register_buffer("proxies", centroids.detach().float().clone())

    @property
    def num_clusters(self) -> int:
        return self.proxies.shape[0]

    def extra_repr(self) -> str:
        return (f"clusters={self.proxies.shape[0]}, dim={self.proxies.shape[1]}, update={self.rule}, "
                f"momentum={self.momentum}, temperature={self.temperature}")

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        """B×d -> B×C float32: f·Pᵀ/τ."""
        with _no_autocast(f.device):
            return f.float() @ self.proxies.t() / self.temperature

    def loss(self, f: torch.Tensor, y, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar cross-entropy of f·Pᵀ/τ against y (labels -1 ignored); gradient to f only.
        ``allowed``: B×C bool, the proxies each row may see (None: all)."""
        logits = self.logits(f)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        return F.cross_entropy(logits, as_labels(y, f.device), ignore_index=-1)

    @torch.no_grad()
    def update(self, f: torch.Tensor, y, groups: BatchGroups | None = None) -> None:
        """Apply this set's update rule with the batch (B×d, B labels); ``groups`` may be shared."""
        f = f.detach().to(self.proxies.dtype)
        if groups is None:
            groups = group_batch(as_labels(y, f.device), self.num_clusters)
        if groups.num_groups == 0:
            return
        fs = f[groups.order]
        if self.rule == "sequential":
            self._update_sequential(fs, groups)
        elif self.rule == "hard":
            self._update_hard(fs, groups)
        else:
            self._update_mean(fs, groups)

    def _momentum_step(self, old: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.momentum * old + (1.0 - self.momentum) * x, dim=1)

    def _update_sequential(self, fs: torch.Tensor, g: BatchGroups) -> None:
        P = self.proxies
        # table[j, u] = sorted position of group u's j-th sample, -1 when it has fewer
        table = torch.full((g.max_count, g.num_groups), -1, dtype=torch.long, device=fs.device)
        table[g.occurrence, g.group] = torch.arange(fs.shape[0], device=fs.device)
        steps = fs[table.clamp(min=0)]  # max_count × U × d
        present = (table >= 0).unsqueeze(2)
        current = P.index_select(0, g.labels)
        for j in range(g.max_count):  # max_count (= K) steps, each cluster at most once per step
            current = torch.where(present[j], self._momentum_step(current, steps[j]), current)
        P.index_copy_(0, g.labels, current)

    def _update_hard(self, fs: torch.Tensor, g: BatchGroups) -> None:
        P = self.proxies
        old = P.index_select(0, g.labels)
        sims = (fs * old[g.group]).sum(1)
        lowest = torch.full((g.num_groups,), float("inf"), device=fs.device, dtype=sims.dtype)
        lowest = lowest.scatter_reduce(0, g.group, sims, "amin")
        n = fs.shape[0]
        position = torch.where(sims == lowest[g.group], torch.arange(n, device=fs.device), n)
        first = torch.full((g.num_groups,), n, dtype=torch.long, device=fs.device)
        first = first.scatter_reduce(0, g.group, position, "amin")
        P.index_copy_(0, g.labels, self._momentum_step(old, fs[first]))

    def _update_mean(self, fs: torch.Tensor, g: BatchGroups) -> None:
        P = self.proxies
        old = P.index_select(0, g.labels)
        sums = torch.zeros_like(old).index_add_(0, g.group, fs)
        mean = sums / g.counts[:, None].to(sums.dtype)
        P.index_copy_(0, g.labels, self._momentum_step(old, mean))


class DiscrepantProxies(nn.Module):
    """M proxy sets (``.sets``, an nn.ModuleList of :class:`ClusterProxies`), all initialised with
    the centroids, each with its own update rule (default [hard, mean], margins [0.2, 0.0]: the
    recipe, ``memory.dcp_updates`` / ``memory.dcp_margins``).

    loss = (1/M) Σ_m max(0, CE_m - margin_m), CE_m = CE(f·P_mᵀ/τ, y), one margin per set in
    ``updates`` order (margin 0 = the plain CE term, no hinge). The unofficial DMI code
    (Trangle12/DCMIP ``ClusterMemory.forward``) is ``updates=(hard|sequential, mean)``,
    ``margins=(0.2, 0.0)``: 0.5·(CE_mean + max(0, CE_first - 0.2)).

    ``margin=`` (deprecated, the old keyword) puts that margin on every ``hard`` set and 0 on
    the others; it cannot be combined with ``margins``.
    """

    def __init__(self, centroids: torch.Tensor, updates: Sequence[str] = ("hard", "mean"),
                 momentum: float = 0.1, temperature: float = 0.05,
                 margins: Sequence[float] | None = DCP_MARGINS, *, margin: float | None = None):
        super().__init__()
        updates = tuple(updates)
        if not updates:
            raise DmireidError("memory.dcp_updates must name at least one rule")
        self.updates = tuple(_check_rule(u) for u in updates)
        self.margins = _margins_per_set(self.updates, margins, margin)
        self.sets = nn.ModuleList(ClusterProxies(centroids, u, momentum, temperature) for u in self.updates)

    @property
    def num_clusters(self) -> int:
        return self.sets[0].num_clusters

    def extra_repr(self) -> str:
        return f"updates={list(self.updates)}, margins={list(self.margins)}"

    def loss_terms(self, f: torch.Tensor, y, allowed: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Raw cross-entropy of each set (before any margin), in ``updates`` order."""
        y = as_labels(y, f.device)
        return [s.loss(f, y, allowed) for s in self.sets]

    def loss(self, f: torch.Tensor, y, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar L_DCP (see the class docstring); gradient to f only. ``allowed``: B×C bool or None."""
        terms = self.loss_terms(f, y, allowed)
        terms = [F.relu(t - m) if m > 0 else t for t, m in zip(terms, self.margins)]
        return torch.stack(terms).mean()

    @torch.no_grad()
    def update(self, f: torch.Tensor, y) -> None:
        """Update every set with its own rule (one shared grouping of the batch)."""
        groups = group_batch(as_labels(y, f.device), self.num_clusters)
        for s in self.sets:
            s.update(f, y, groups=groups)


def _margins_per_set(updates: tuple[str, ...], margins, margin) -> tuple[float, ...]:
    """One non-negative margin per set; ``margin`` (deprecated) applies to the ``hard`` sets."""
    if margin is not None:
        if margins is not None and margins is not DCP_MARGINS:
            raise DmireidError("DiscrepantProxies: give margins (one per set) or the deprecated margin, not both")
        warnings.warn("DiscrepantProxies(margin=...) is deprecated: use margins=[one per set] "
                      "(margin applies to the hard sets only)", DeprecationWarning, stacklevel=3)
        margins = [float(margin) if u == "hard" else 0.0 for u in updates]
    if margins is None:
        return (0.0,) * len(updates)
    try:
        if isinstance(margins, (str, bytes)):
            raise TypeError
        values = tuple(float(m) for m in margins)
    except (TypeError, ValueError):
        raise DmireidError(f"memory.dcp_margins must be a list of numbers, one per DCP set, "
                           f"got {margins!r}") from None
    if len(values) != len(updates):
        raise DmireidError(f"memory.dcp_margins has {len(values)} value(s) but memory.dcp_updates has "
                           f"{len(updates)} set(s) {list(updates)}: give one margin per set")
    bad = [m for m in values if not m >= 0]  # also catches NaN
    if bad:
        raise DmireidError(f"memory.dcp_margins must be >= 0, got {list(values)}")
    return values
