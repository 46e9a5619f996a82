"""Helpers the model-using tests share."""

import torch


def randomise_bn(model, seed):
    """Non-trivial BatchNorm running statistics, so eval mode differs from a fresh model."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1 + 0.2 * torch.rand(m.running_var.shape, generator=g))
    return model
