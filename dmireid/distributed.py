"""Thin helpers over ``torch.distributed`` that degrade to no-ops in a single process.

Launch with ``torchrun --nproc_per_node=N -m dmireid train ...``: torchrun sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` joins the group (NCCL on CUDA, gloo
on CPU). Only rank 0 logs and writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "is_distributed", "rank", "world_size", "is_main", "all_gather_cat",
           "all_gather_uneven", "average_buffers", "broadcast", "main_decides", "barrier", "cleanup"]


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by torchrun; returns ``(rank, world_size)``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped tensors of every rank along dim 0, in rank order."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_gather_uneven(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate tensors whose dim 0 differs per rank, in rank order."""
    if not is_distributed():
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = all_gather_cat(size).tolist()
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = all_gather_cat(padded)
    return torch.cat([gathered[r * max(sizes): r * max(sizes) + n] for r, n in enumerate(sizes)])


def average_buffers(module: torch.nn.Module) -> None:
    """Average floating buffers (BN running stats) over ranks, in place.

    With every rank starting from the same running stats, the average of the per-rank momentum
    updates equals one update with the mean of the per-rank batch statistics: exactly what ghost
    BatchNorm does with groups of ``bn_group_size`` in a single process.
    """
    if not is_distributed():
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for b in buffers:
        b.copy_(flat[offset: offset + b.numel()].view_as(b))
        offset += b.numel()


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor


def main_decides(flag: bool, device: torch.device | str = "cpu") -> bool:
    """Rank 0's ``flag`` on every rank (e.g. whether to resume: each node may see other files)."""
    if not is_distributed():
        return bool(flag)
    return bool(broadcast(torch.tensor([int(bool(flag))], device=device)).item())


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
