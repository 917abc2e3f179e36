"""Prediction rules: a model's output dict -> class probabilities (B, 3), in float32."""
from __future__ import annotations

from typing import Callable

import torch

Prediction = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def softmax_logits(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """Softmax of the main logits (argmax decides): every version but v6 and v7."""
    return out["logits"].float().softmax(1)


def cumulative_to_class_probs(exceed: torch.Tensor) -> torch.Tensor:
    """(P(Y>0), P(Y>1)) -> (P0, P1, P2) = (1-s0, s0-s1, s1), clamped at 0 and renormalised (floor 1e-8)."""
    s0, s1 = exceed[:, 0], exceed[:, 1]
    # nothing makes s0 >= s1, so P1 can come out negative: the notebooks clamp it and renormalise
    probs = torch.stack([1 - s0, s0 - s1, s1], 1).clamp(min=0)
    return probs / probs.sum(1, keepdim=True).clamp(min=1e-8)


def coral_probs(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """v6 (docs/variants.md §6.4): class probabilities from the sigmoid of the two ordinal logits."""
    return cumulative_to_class_probs(out["ordinal"].float().sigmoid())


def ce_ordinal_mix(out: dict[str, torch.Tensor], ce_share: float = 0.6) -> torch.Tensor:
    """v7 (docs/variants.md §7.4): ce_share x softmax(logits) + the rest x the ordinal head's probabilities."""
    return ce_share * softmax_logits(out) + (1 - ce_share) * coral_probs(out)


PREDICTIONS: dict[str, Prediction] = {"softmax": softmax_logits, "coral": coral_probs,
                                      "ce_ordinal_mix": ce_ordinal_mix}
