"""Which parts of a network train: BatchNorm statistics kept or trained, the last N blocks of its
trunk only (the others frozen), and L2-SP, the penalty that keeps trained weights near their
starting values (Li et al. 2018), with `drift`, how far the weights moved."""

from __future__ import annotations

import torch
from torch import nn


def set_train_mode(model: nn.Module, batchnorm: str) -> None:
    """Train mode, except BatchNorm layers in eval mode when their statistics are frozen
    (`batchnorm=frozen`, or a layer of a frozen block: none of its parameters trains); any other
    `batchnorm` (`sync`, `train`) trains the statistics of the other layers."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            frozen_block = not any(p.requires_grad for p in module.parameters())
            if batchnorm == "frozen" or frozen_block:
                module.eval()


def trunk_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's blocks in order, as (qualified name, module), those with parameters only.

    A block is an element of a sequence (`nn.Sequential`, `nn.ModuleList`: a residual or MBConv
    block, or a layer of a plain sequence), a module with parameters of its own (a convolution
    with a padding child), or a leaf layer; any other module is looked into. Registration order
    is taken as the order of the forward pass, as in the registered backbones.
    """

    def walk(prefix: str, module: nn.Module, in_sequence: bool) -> list[tuple[str, nn.Module]]:
        children = list(module.named_children())
        own = any(True for _ in module.parameters(recurse=False))
        if not children or in_sequence or own:
            return [(prefix, module)]
        sequence = isinstance(module, (nn.Sequential, nn.ModuleList))
        return [
            block
            for name, child in children
            for block in walk(f"{prefix}.{name}" if prefix else name, child, sequence)
        ]

    return [(n, m) for n, m in walk("", model, False) if any(True for _ in m.parameters())]


def freeze_blocks(model: nn.Module, train_blocks: int) -> list[str]:
    """Freeze all but the last `train_blocks` blocks of `trunk_blocks(model)` (0: none frozen):
    their parameters get `requires_grad = False`. Returns the names of the frozen blocks."""
    if train_blocks < 0:
        raise ValueError(f"train_blocks must be >= 0, got {train_blocks}")
    blocks = trunk_blocks(model)
    if train_blocks == 0 or train_blocks >= len(blocks):
        return []
    frozen = blocks[: len(blocks) - train_blocks]
    for _, module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return [name for name, _ in frozen]


def l2sp_penalty(model: nn.Module, start: dict[str, torch.Tensor], alpha: float) -> torch.Tensor:
    """`alpha * sum ||w - w0||^2` over the parameters of `model` that train and have a starting
    value in `start` (name -> tensor), a scalar with gradient."""
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    for name, p in model.named_parameters():
        if p.requires_grad and name in start:
            total = total + (p - start[name]).pow(2).sum()
    return alpha * total


def drift(model: nn.Module, start: dict[str, torch.Tensor]) -> float:
    """||w - w0|| / ||w0|| over all parameters of `model` with a starting value in `start`."""
    moved = norm = 0.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in start:
                w0 = start[name].to(p.device)
                moved += float((p - w0).pow(2).sum())
                norm += float(w0.pow(2).sum())
    return (moved / norm) ** 0.5 if norm else 0.0
