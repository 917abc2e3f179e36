"""The optimiser's pieces the trainer shares with every variant: parameter groups at the backbone's
rate, the per-batch LR multiplier, and SWA's BatchNorm refresh."""
from __future__ import annotations

import math

import torch


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, floor: float, first_step_zero: bool = True) -> float:
    """Per-batch linear warmup then cosine to 0, floored (a multiplier, as in the notebooks).

    The notebooks' warmup is step/W, so the very first update has LR 0 (docs/variants.md §12.16);
    first_step_zero=False uses (step+1)/W.
    """
    if step < warmup_steps:
        return (step + (0 if first_step_zero else 1)) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(floor, 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def backbone_groups(model: torch.nn.Module) -> tuple[str, ...]:
    """Parameter groups with the backbone's LR and weight decay, frozen by train.freeze_epochs."""
    return tuple(getattr(model, "backbone_groups", ("backbone",)))


@torch.no_grad()
def refresh_batchnorm(model: torch.nn.Module, loader, to_device) -> None:
    """torch.optim.swa_utils.update_bn for our dict batches: BN statistics recomputed as a plain
    average over one pass of the training data."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = {bn: bn.momentum for bn in bns}
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    for batch in loader:
        batch = to_device(batch)
        model(batch["image"], batch["level"])
    for bn in bns:
        bn.momentum = momenta[bn]
    model.train(was_training)
