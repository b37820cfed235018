"""Cross-rank gathering for training under ``torch.distributed`` (DDP, one process per rank).

All gathering in drawmatch goes through this module. Every function is the identity when
``torch.distributed`` is not initialised, so the same training code runs in a single process.

- Gathered tensors are concatenated along dim 0 **in rank order** (rank 0's rows first), so every
  rank sees the same gathered batch, and the concatenation equals the single-process batch built by
  stacking the ranks' local batches in rank order.
- Ranks may hold different numbers of rows: sizes are gathered first, rows padded to the largest,
  gathered, then trimmed.
- These are collectives: every rank must call them, in the same order, with tensors of the same
  dtype and trailing shape.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and initialised."""
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when not distributed."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """The row count ``n`` of every rank, in rank order (``[n]`` when not distributed)."""
    _, world_size = world()
    if world_size == 1:
        return [n]
    local = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world_size)]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _gather_parts(x: Tensor) -> list[Tensor]:
    """Every rank's ``x`` (b_k, ...) as a list in rank order; all parts are detached copies."""
    _, world_size = world()
    sizes = gather_sizes(x.shape[0], device=x.device)
    max_b = max(sizes)
    is_bool = x.dtype == torch.bool
    send = x.detach().to(torch.uint8) if is_bool else x.detach()
    if send.shape[0] < max_b:
        pad = send.new_zeros((max_b - send.shape[0], *send.shape[1:]))
        send = torch.cat([send, pad], dim=0)
    recv = [torch.empty_like(send) for _ in range(world_size)]
    dist.all_gather(recv, send.contiguous())
    parts = [r[:n] for r, n in zip(recv, sizes, strict=True)]
    return [p.bool() for p in parts] if is_bool else parts


def all_gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (b, ...) over ranks in rank order -> (sum_b, ...), without autograd.

    Use it for labels, indices and bank shards. Not distributed: returns ``x.detach()``.
    """
    if not is_distributed() or world()[1] == 1:
        return x.detach()
    return torch.cat(_gather_parts(x), dim=0)


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (b, ...) over ranks in rank order -> (sum_b, ...).

    The local slice is ``x`` itself, so it keeps its autograd graph; the other ranks' slices are
    detached. A loss computed on the result therefore sends gradient only into this rank's inputs;
    see :func:`drawmatch.training.losses.distributed_step_loss` for how that is scaled under DDP.
    Not distributed: returns ``x`` unchanged.
    """
    if not is_distributed() or world()[1] == 1:
        return x
    rank, _ = world()
    parts = _gather_parts(x)
    parts[rank] = x
    return torch.cat(parts, dim=0)
