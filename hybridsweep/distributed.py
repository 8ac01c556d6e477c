"""Cross-device negatives: gather embeddings from every rank with gradients flowing back.

Under DDP each rank encodes its slice of the global contrastive batch. Concatenating the slices
of all ranks (in rank order) gives every rank the global embedding matrices, so every rank
computes the same global loss L over ``batch_size`` pairs and every pair has all others, from all
ranks, as negatives. ``torch.distributed.nn.functional.all_gather`` differentiates the gather: the
gradient reaching rank r's slice is the sum over ranks k of dL_k/de_r = W * dL/de_r (every rank
computes the same L). DDP then averages parameter gradients over the W ranks, so the update equals
the single-process gradient dL/dtheta of the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """The rows of ``local`` from every rank, concatenated in rank order; differentiable."""
    if world()[1] == 1:
        return local
    return torch.cat(all_gather(local), dim=0)
