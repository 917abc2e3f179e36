"""Losses. Each takes the model's output dict and the batch and returns a dict of named loss terms;
the trainer sums them, so it knows nothing about heads or architectures."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from harness.config import LossConfig
from harness.errors import UsageError

LossFn = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def weighted_ce(cfg: LossConfig) -> LossFn:
    """Class-weighted CE; mean reduction divides by the sum of the targets' weights (as PyTorch does)."""
    weight = torch.tensor(cfg.class_weights, dtype=torch.float32)

    def loss(out, batch):
        logits = out["logits"].float()
        return {"ce": F.cross_entropy(logits, batch["label"], weight=weight.to(logits.device),
                                      label_smoothing=cfg.label_smoothing)}
    return loss


LOSSES: dict[str, Callable[[LossConfig], LossFn]] = {"weighted_ce": weighted_ce}


def build_loss(cfg: LossConfig) -> LossFn:
    if cfg.name not in LOSSES:
        raise UsageError(f"loss.name={cfg.name!r} is not one of {', '.join(LOSSES)}")
    return LOSSES[cfg.name](cfg)
