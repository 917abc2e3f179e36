"""Losses. Each takes the model's output dict and the batch and returns a dict of named loss terms;
the trainer sums them, so it knows nothing about heads or architectures.

Outputs: "logits" (B, 3) is the main 3-class head; v4/v10 add "binary" and "severity" (B, 2), v6/v7
"ordinal" (B, 2) with logit k for P(Y > k). Every term is computed in float32 (AMP may give fp16/bf16).
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness.core.config import LossConfig
from harness.core.errors import DataError, UsageError

LossFn = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]]
LossFactory = Callable[[LossConfig, "torch.Tensor | None"], LossFn]

# rule -> (exponent of 1/n, added to n, clip range after normalising to sum 3)
_WEIGHT_RULES = {"inverse": (1.0, 0.0, None),               # baseline: 1/n
                 "inverse_sqrt": (0.5, 1e-6, (0.3, 2.0))}   # v4 (docs/variants.md §4.3)


def class_weights_from_counts(counts: Sequence[int], rule: str,
                              fixed: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[float, ...]:
    """Per-class weights from the training fold's (pre-oversampling) class counts; rule 'fixed' returns fixed."""
    if rule == "fixed":
        return tuple(fixed)
    if rule not in _WEIGHT_RULES:
        raise UsageError(f"loss.class_weight_rule={rule!r} is not one of fixed, {', '.join(_WEIGHT_RULES)}")
    power, eps, clip = _WEIGHT_RULES[rule]
    n = np.asarray(counts, dtype=np.float64) + eps
    if len(n) != 3 or not (n > 0).all():
        raise DataError(f"loss.class_weight_rule={rule} needs a count > 0 for each of 3 classes, "
                        f"got {[int(c) for c in counts]}")
    w = n ** -power
    w = w / w.sum() * 3
    if clip is not None:  # after normalising, as v4 did, so the sum may leave 3
        w = np.clip(w, *clip)
    return tuple(float(v) for v in w)


# ----------------------------------------------------------------------------- terms

@functools.lru_cache(maxsize=None)
def _on_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    # once per device: a blocking host-to-device copy in every step would make each step wait for the GPU
    return t.to(device)


def _cross_entropy(logits, y, weight, smoothing, reduction="mean"):
    """PyTorch CE; a weighted mean divides by the sum of the targets' weights."""
    weight = None if weight is None else _on_device(weight, logits.device)
    return F.cross_entropy(logits, y, weight=weight, label_smoothing=smoothing, reduction=reduction)


def _focal(logits, y, weight, cfg: LossConfig):
    """Focal loss, plain batch mean. 'notebook' (docs/variants.md §4.5): ce = weighted smoothed CE per sample,
    pt = exp(-ce), (1-pt)^gamma * ce, so the weights also change the focusing. 'textbook' (Lin et al.):
    pt = softmax probability of the true class from the raw logits, alpha_y (1-pt)^gamma * ce with ce
    the smoothed, unweighted CE."""
    if cfg.focal_form == "notebook":
        ce = _cross_entropy(logits, y, weight, cfg.label_smoothing, "none")
        pt = torch.exp(-ce)
        return ((1 - pt) ** cfg.gamma * ce).mean()
    ce = _cross_entropy(logits, y, None, cfg.label_smoothing, "none")
    pt = logits.softmax(1).gather(1, y[:, None]).squeeze(1)
    alpha = 1.0 if weight is None else _on_device(weight, logits.device)[y]
    return (alpha * (1 - pt) ** cfg.gamma * ce).mean()


def _aux_terms(out, y, aux_weight: float) -> dict[str, torch.Tensor]:
    """v4/v10: normal-vs-abnormal CE on every sample, moderate-vs-severe CE on the abnormal ones only."""
    abnormal = (y > 0).float()
    binary = F.cross_entropy(out["binary"].float(), abnormal.long())
    # masked mean instead of indexing: no host sync, and 0 (with a graph) when no sample is abnormal
    severity_nll = F.cross_entropy(out["severity"].float(), (y - 1).clamp(min=0), reduction="none")
    severity = (severity_nll * abnormal).sum() / abnormal.sum().clamp(min=1)
    return {"aux_binary": aux_weight * binary, "aux_severity": aux_weight * severity}


def _ordinal_bce(ordinal, y):
    """BCE of the P(Y>0), P(Y>1) logits against [1[y>0], 1[y>1]], mean over B x 2, unweighted (v6 CORAL, v7)."""
    targets = torch.stack([y > 0, y > 1], 1).float()
    return F.binary_cross_entropy_with_logits(ordinal.float(), targets)


# ----------------------------------------------------------------------------- losses
# The 3-class term of every loss reads cfg.class_weights and cfg.label_smoothing; the notebooks' values
# are each variant's defaults (v5-v7: weights 1, v6/v7: no smoothing).

def weighted_ce(cfg: LossConfig, weight) -> LossFn:
    """v8, v9: class-weighted CE with label smoothing."""
    def loss(out, batch):
        return {"ce": _cross_entropy(out["logits"].float(), batch["label"], weight, cfg.label_smoothing)}
    return loss


def focal(cfg: LossConfig, weight) -> LossFn:
    """Baseline, v4, v5, v10: focal loss, plus aux_weight x (binary + severity CE) when the model has those heads."""
    def loss(out, batch):
        y = batch["label"]
        terms = {"focal": _focal(out["logits"].float(), y, weight, cfg)}
        if cfg.aux_weight > 0 and "binary" in out and "severity" in out:
            terms |= _aux_terms(out, y, cfg.aux_weight)
        return terms
    return loss


def coral_ce(cfg: LossConfig, weight) -> LossFn:
    """v6: CORAL BCE on the ordinal logits + ce_weight x CE on the CE head."""
    def loss(out, batch):
        y = batch["label"]
        return {"coral": _ordinal_bce(out["ordinal"], y),
                "ce": cfg.ce_weight * _cross_entropy(out["logits"].float(), y, weight, cfg.label_smoothing)}
    return loss


def focal_ordinal(cfg: LossConfig, weight) -> LossFn:
    """v7: focal on the CE head + ordinal_weight x BCE on the two independent ordinal logits."""
    def loss(out, batch):
        y = batch["label"]
        return {"focal": _focal(out["logits"].float(), y, weight, cfg),
                "ordinal": cfg.ordinal_weight * _ordinal_bce(out["ordinal"], y)}
    return loss


LOSSES: dict[str, LossFactory] = {"weighted_ce": weighted_ce, "focal": focal, "coral_ce": coral_ce,
                                  "focal_ordinal": focal_ordinal}


def with_mixup(loss_fn: LossFn) -> LossFn:
    """A mixed batch (it has "label_b" and "lam") scores every term as lam*term(y) + (1-lam)*term(y_b) (v5-v7)."""
    def loss(out, batch):
        terms = loss_fn(out, batch)
        if "label_b" not in batch:
            return terms
        lam = batch["lam"].float()
        other = loss_fn(out, batch | {"label": batch["label_b"]})
        return {name: lam * term + (1 - lam) * other[name] for name, term in terms.items()}
    return loss


def build_loss(cfg: LossConfig, class_weights: Sequence[float] | None = None) -> LossFn:
    """The loss cfg names; class_weights (from class_weights_from_counts) replaces cfg.class_weights."""
    if cfg.name not in LOSSES:
        raise UsageError(f"loss.name={cfg.name!r} is not one of {', '.join(LOSSES)}")
    if class_weights is None and cfg.class_weight_rule != "fixed":
        raise ValueError(f"loss.class_weight_rule={cfg.class_weight_rule} needs class_weights from the fold's counts")
    weights = cfg.class_weights if class_weights is None else tuple(class_weights)
    # all ones is the notebooks' unweighted call (identical values), so pass no weight at all
    weight = None if all(w == 1 for w in weights) else torch.tensor(weights, dtype=torch.float32)
    return with_mixup(LOSSES[cfg.name](cfg, weight))
