"""Momentum (EMA) encoder θ' of DMI (spec §4.3)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class MomentumEncoder(nn.Module):
    """A frozen deep copy ``.module`` of ``model`` updated as θ' <- α·θ' + (1-α)·θ.

    ``update(model)`` applies the EMA to every parameter and every floating-point buffer (BN
    running_mean/var) and copies integer buffers (num_batches_tracked); vectorised with
    ``torch._foreach_*``. The copy has requires_grad False and starts in eval mode; which mode
    it embeds batches in is the caller's choice. Its state_dict is ``module.*``.
    """

    def __init__(self, model: nn.Module, alpha: float = 0.999):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"EMA alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.module = copy.deepcopy(_unwrap(model))
        self.module.requires_grad_(False)
        self.module.eval()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ' <- α·θ' + (1-α)·θ for parameters and floating buffers; integer buffers copied."""
        source = _unwrap(model)
        src_params = [p.detach() for p in source.parameters()]
        dst_params = list(self.module.parameters())
        src_buffers = list(source.buffers())
        dst_buffers = list(self.module.buffers())
        if len(src_params) != len(dst_params) or len(src_buffers) != len(dst_buffers):
            raise ValueError("MomentumEncoder.update: the model's structure differs from the momentum copy's")
        dst_float, src_float = list(dst_params), list(src_params)
        for d, s in zip(dst_buffers, src_buffers):
            if d.is_floating_point():
                dst_float.append(d)
                src_float.append(s)
            else:
                d.copy_(s)
        if dst_float:
            # lerp: θ' + (1-α)(θ - θ') = α·θ' + (1-α)·θ
            torch._foreach_lerp_(dst_float, src_float, 1.0 - self.alpha)
