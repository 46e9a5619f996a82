"""Momentum (EMA) encoder θ' of DMI (spec §4.3)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import DmireidError


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

    ``update(model)`` applies the EMA to every parameter and, with ``buffers=True``, to every
    floating-point buffer (BN running_mean/var) while integer buffers (num_batches_tracked) are
    copied. With ``buffers=False`` (default, ``memory.ema_buffers``) only the parameters are
    averaged and the copy's buffers are left alone: they move only through its own train-mode
    forwards (see :meth:`embed`), the unofficial DMI code's rule (Trangle12/DCMIP
    ``ClusterContrastTrainer_PCLMP._update_ema_variables``). Vectorised with ``torch._foreach_*``.
    The copy has requires_grad False and starts in eval mode. Its state_dict is ``module.*``.
    """

    def __init__(self, model: nn.Module, alpha: float = 0.999, buffers: bool = False):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"EMA alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.ema_buffers = bool(buffers)
        self.module = copy.deepcopy(_unwrap(model))
        self.module.requires_grad_(False)
        self.module.eval()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, buffers={self.ema_buffers}"

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, mode: str = "eval") -> torch.Tensor:
        """θ' features of a batch without gradient, with θ' in ``mode`` (``train`` | ``eval``).

        ``train`` uses batch statistics and moves the copy's BN running statistics (and
        num_batches_tracked), as the peer's ``encoder_ema.train()`` forward does; θ' stays in
        that mode afterwards.
        """
        if mode not in ("train", "eval"):
            raise DmireidError(f"memory.ema_forward must be 'train' or 'eval', got {mode!r}")
        self.module.train(mode == "train")
        return self.module(images)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ' <- α·θ' + (1-α)·θ for parameters (and floating buffers when ``buffers``)."""
        source = _unwrap(model)
        src_params = [p.detach() for p in source.parameters()]
        dst_params = list(self.module.parameters())
        src_buffers = list(source.buffers())
        dst_buffers = list(self.module.buffers())
        if len(src_params) != len(dst_params) or len(src_buffers) != len(dst_buffers):
            raise ValueError("MomentumEncoder.update: the model's structure differs from the momentum copy's")
        dst_float, src_float = list(dst_params), list(src_params)
        if self.ema_buffers:
            for d, s in zip(dst_buffers, src_buffers):
                if d.is_floating_point():
                    dst_float.append(d)
                    src_float.append(s)
                else:
                    d.copy_(s)
        if dst_float:
            # lerp: θ' + (1-α)(θ - θ') = α·θ' + (1-α)·θ
            torch._foreach_lerp_(dst_float, src_float, 1.0 - self.alpha)
