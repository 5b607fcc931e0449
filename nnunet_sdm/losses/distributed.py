"""Cross-process reduction for batch-wise loss terms under DDP, as nnU-Net's ``ddp`` flag does.

nnU-Net's soft Dice with ``batch_dice`` and ``ddp`` gathers the per-class sums of every rank (with
gradient) before forming the ratio, so the Dice of the global batch is optimised. This module does
the same without importing nnU-Net; the losses hold no global state.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world_size = dist.get_world_size()
        gathered = [torch.zeros_like(tensor) for _ in range(world_size)]
        dist.all_gather(gathered, tensor)
        return torch.stack(gathered)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad_output.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[dist.get_rank()]


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all DDP ranks, differentiably; identity outside a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor).sum(0)
