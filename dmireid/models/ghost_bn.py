"""Ghost BatchNorm: per-group batch statistics in train mode (spec §2, ``model.bn_group_size``).

The published CC/DMI runs used 4-GPU ``DataParallel`` with a 256-image batch, so every BatchNorm
layer normalised 64 images at a time. ``set_bn_group_size(model, 64)`` reproduces this on one
device: in train mode each BatchNorm splits the batch into consecutive groups of ``G`` images and
normalises each group with its own mean/variance.

Running statistics are updated with the *mean over groups* of the per-group statistics
(``running = (1 - momentum) * running + momentum * mean_g(stat_g)``, the variance unbiased per
group as in plain BN). Under DataParallel only replica 0's running statistics survive (the other
replicas' updates are discarded), so this is an approximation of it with lower variance. Eval mode
uses the running statistics as usual. ``G == 0`` or ``G >= batch`` is ordinary BatchNorm.

When the batch is not a multiple of ``G`` the last group holds the remainder (and counts as one
group, with equal weight, in the running-statistics mean).

The ghost modules subclass ``nn.BatchNorm1d``/``nn.BatchNorm2d`` and are swapped in place (the
module object, its parameters and buffers stay the same), so state_dict keys are unchanged and
optimisers holding the parameters keep working.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)


class GhostBatchNormMixin:
    """Overrides ``forward`` of a BatchNorm subclass with per-group statistics in train mode."""

    group_size: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B×C or B×C×L (1d), B×C×H×W (2d)
        self._check_input_dim(x)
        batch = x.shape[0]
        group = int(self.group_size)
        use_batch_stats = self.training or self.running_mean is None
        if not use_batch_stats or group <= 0 or group >= batch:
            return super().forward(x)  # the plain layer's own forward (incl. any activation it has)

        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        else:
            factor = 0.0 if self.momentum is None else self.momentum
        update_running = self.training and self.running_mean is not None

        full = (batch // group) * group
        groups = batch // group
        parts = [self._grouped(x[:full] if full < batch else x, group, groups, factor, update_running)]
        if full < batch:
            parts.append(self._grouped(x[full:], batch - full, 1, factor, update_running))
        if update_running:
            # each part returned its updated running stats summed over its groups
            total = groups + (1 if full < batch else 0)
            mean = sum(p[1] for p in parts) / total
            var = sum(p[2] for p in parts) / total
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
        out = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return self.after_norm(out)

    def after_norm(self, y: torch.Tensor) -> torch.Tensor:
        """What the plain layer applies after normalising (identity; e.g. drop + act in BatchNormAct2d)."""
        return y

    def _grouped(self, x, group, groups, factor, update_running):
        """Normalise ``x`` (groups*group × C × ...) per group with the native batch_norm kernel.

        The groups are moved into the channel dimension: (n·G, C, …) → (G, n·C, …), so one call
        computes n·C independent statistics. Returns (output, Σ_g running_mean_g, Σ_g running_var_g).
        """
        channels = x.shape[1]
        rest = x.shape[2:]
        xg = x.reshape(groups, group, channels, *rest).transpose(0, 1).reshape(group, groups * channels, *rest)
        weight = self.weight.repeat(groups) if self.weight is not None else None
        bias = self.bias.repeat(groups) if self.bias is not None else None
        if update_running:
            rmean = self.running_mean.repeat(groups)
            rvar = self.running_var.repeat(groups)
        else:
            rmean = rvar = None
        y = F.batch_norm(xg, rmean, rvar, weight, bias, True, factor, self.eps)
        y = y.reshape(group, groups, channels, *rest).transpose(0, 1).reshape(x.shape)
        if update_running:
            return y, rmean.view(groups, channels).sum(0), rvar.view(groups, channels).sum(0)
        return y, None, None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group_size={self.group_size}"


class GhostBatchNorm1d(GhostBatchNormMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with per-group train statistics (``group_size`` images per group)."""


class GhostBatchNorm2d(GhostBatchNormMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with per-group train statistics (``group_size`` images per group)."""


_GHOST: dict[type, type] = {nn.BatchNorm1d: GhostBatchNorm1d, nn.BatchNorm2d: GhostBatchNorm2d}
_PLAIN: dict[type, type] = {v: k for k, v in _GHOST.items()}


def register_ghost_class(plain: type, ghost: type) -> None:
    """Let :func:`set_bn_group_size` swap ``plain`` (a BatchNorm subclass, e.g. timm's BatchNormAct2d)
    for ``ghost`` (``class Ghost(GhostBatchNormMixin, plain)``, overriding ``after_norm`` if needed)."""
    if not (issubclass(ghost, plain) and issubclass(ghost, GhostBatchNormMixin)):
        raise TypeError(f"{ghost.__name__} must subclass both {plain.__name__} and the ghost BatchNorm mixin")
    _GHOST[plain] = ghost
    _PLAIN[ghost] = plain


def set_bn_group_size(model: nn.Module, group_size: int) -> int:
    """Make every BatchNorm1d/2d of ``model`` a ghost BatchNorm with ``group_size`` (in place).

    ``group_size == 0`` restores plain BatchNorm. Returns the number of layers changed. Classes
    added with :func:`register_ghost_class` are converted too; other BatchNorm variants
    (SyncBatchNorm, BatchNorm3d, unregistered subclasses) are left alone, with a warning for the
    subclasses. Other norms (InstanceNorm, LayerNorm, GroupNorm) are never touched.
    """
    group_size = int(group_size)
    if group_size < 0:
        raise ValueError(f"bn_group_size must be >= 0, got {group_size}")
    changed = 0
    left_alone = set()
    for module in model.modules():
        cls = type(module)
        if group_size > 0 and cls not in _GHOST and cls not in _PLAIN and isinstance(module, _BatchNorm) \
                and not isinstance(module, (nn.SyncBatchNorm, nn.BatchNorm3d)):
            left_alone.add(cls.__name__)
        if group_size > 0 and cls in _GHOST:
            module.__class__ = _GHOST[cls]
        elif group_size == 0 and cls in _PLAIN:
            module.__class__ = _PLAIN[cls]
            module.__dict__.pop("group_size", None)
            changed += 1
            continue
        if type(module) in _PLAIN:
            module.group_size = group_size
            changed += 1
    if left_alone:
        log.warning("bn_group_size=%d: BatchNorm subclasses without a ghost variant keep whole-batch statistics: %s",
                    group_size, ", ".join(sorted(left_alone)))
    return changed
