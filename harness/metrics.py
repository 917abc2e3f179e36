"""Validation metrics: per-class recall, balanced accuracy, prediction counts, the competition log loss."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, log_loss, precision_score, recall_score

from harness.data.schema import CLASS_KEYS

LABELS = [0, 1, 2]
SAMPLE_WEIGHTS = np.array([1.0, 2.0, 4.0])  # competition weights: Normal/Mild, Moderate, Severe


def classification_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """BA as the notebooks computed it: the plain mean of the three recalls (a class absent from y counts 0)."""
    pred = probs.argmax(1)
    recalls = recall_score(y, pred, labels=LABELS, average=None, zero_division=0)
    precisions = precision_score(y, pred, labels=LABELS, average=None, zero_division=0)
    counts = np.bincount(pred, minlength=3)
    out = {"balanced_accuracy": float(recalls.mean()), "accuracy": float((pred == y).mean())}
    for k, name in enumerate(CLASS_KEYS):
        out[f"recall/{name}"] = float(recalls[k])
        out[f"precision/{name}"] = float(precisions[k])
        out[f"pred_count/{name}"] = int(counts[k])
    out["weighted_log_loss"] = weighted_log_loss(y, probs)
    return out


def weighted_log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Sample-weighted (1/2/4) multi-class log loss, clipped as sklearn does: one condition group's score."""
    return float(log_loss(y, probs, sample_weight=SAMPLE_WEIGHTS[y], labels=LABELS))


def any_severe_spinal_loss(study_ids: np.ndarray, y: np.ndarray, probs: np.ndarray) -> float:
    """Per study: label = any level Severe, prediction = max P(severe), weight = max level weight."""
    df = pd.DataFrame({"study": study_ids, "severe": (y == 2).astype(int), "p": probs[:, 2], "w": SAMPLE_WEIGHTS[y]})
    per_study = df.groupby("study").agg(severe=("severe", "max"), p=("p", "max"), w=("w", "max"))
    p = np.clip(per_study["p"].to_numpy(), 1e-15, 1 - 1e-15)
    return float(log_loss(per_study["severe"], np.stack([1 - p, p], 1), sample_weight=per_study["w"], labels=[0, 1]))


def competition_score_spinal(study_ids: np.ndarray, y: np.ndarray, probs: np.ndarray) -> float:
    """Mean of the spinal group loss and any_severe_spinal: the competition score restricted to spinal."""
    return (weighted_log_loss(y, probs) + any_severe_spinal_loss(study_ids, y, probs)) / 2


def confusion(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return confusion_matrix(y, probs.argmax(1), labels=LABELS)


def dead_classes(pred_counts: np.ndarray, minimum: int) -> list[str]:
    """Classes predicted fewer than `minimum` times (the v8-v10 dead-class monitor)."""
    return [CLASS_KEYS[k] for k in range(3) if pred_counts[k] < minimum]
