"""Slice attention of a model over the validation set, and its two figures (by class; example samples)."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from harness.tracking import plots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WEIGHT_KEYS = ("attention", "slice_weights")  # per-slice weights (B, S) in a model's output dict, if it has any


def _gather(model, loader, to_device, autocast, predict=None):
    """(weights, labels, probabilities or None) over the loader in order; None if the model has no slice weights."""
    was_training = model.training
    model.eval()
    weights, labels, probs = [], [], []
    try:
        with torch.no_grad():
            for batch in loader:
                batch = to_device(batch)
                with autocast():
                    out = model(batch["image"], batch["level"])
                key = next((k for k in WEIGHT_KEYS if k in out), None)
                if key is None:
                    return None
                # float() first: under autocast the weights may be bfloat16, which NumPy cannot hold
                weights.append(out[key].float().cpu().numpy().astype(np.float64))
                labels.append(batch["label"].cpu().numpy())
                if predict is not None:
                    probs.append(predict({k: v.float() for k, v in out.items()}).cpu().numpy())
    finally:
        model.train(was_training)
    if not weights:
        return None
    return np.concatenate(weights), np.concatenate(labels), np.concatenate(probs) if probs else None


def collect_slice_attention(model, loader, to_device, autocast=contextlib.nullcontext
                            ) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-sample slice weights (N, S) float64 and labels (N,), in loader order; None for a model without them."""
    gathered = _gather(model, loader, to_device, autocast)
    return None if gathered is None else gathered[:2]


def pick_examples(labels: np.ndarray, examples: int) -> np.ndarray:
    """The first sample of each class present, then the next samples in order, up to `examples`; by class."""
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    rest = [i for i in range(len(labels)) if i not in firsts]
    chosen = np.array((firsts + rest)[:examples], dtype=np.int64)
    return chosen[np.lexsort((chosen, labels[chosen]))]


def attention_figures(model, loader, to_device, autocast, dataset, title: str, examples: int = 4,
                      predict: Callable | None = None) -> dict[str, Figure]:
    """{'attention_by_class.png', 'attention_examples.png'} figures; {} for a model without slice weights.
    `loader` must run over `dataset` in order (a validation loader does); `predict` (outputs -> probabilities,
    the variant's hook) adds the predicted class to the examples."""
    gathered = _gather(model, loader, to_device, autocast, predict)
    if gathered is None:
        return {}
    weights, labels, probs = gathered
    chosen = pick_examples(labels, examples)
    images = np.stack([dataset[int(i)]["image"].float().numpy() for i in chosen])
    return {
        "attention_by_class.png": plots.attention_by_class(weights, labels, title),
        "attention_examples.png": plots.attention_examples(weights[chosen], images, labels[chosen],
                                                           None if probs is None else probs[chosen], title),
    }
