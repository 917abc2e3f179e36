"""Validation metrics: per-class recall, balanced accuracy, prediction counts, the competition log loss."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, log_loss, precision_score, recall_score

from harness.core.competition import CLASS_KEYS

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


def as_probabilities(probs: np.ndarray) -> np.ndarray:
    """float64 rows divided by their sum, as Kaggle's metric does before it scores (a float32 input
    would make sklearn clip at 1.2e-7 instead of 2.2e-16 and under-penalise confident mistakes)."""
    p = np.asarray(probs, dtype=np.float64)
    return p / p.sum(1, keepdims=True)


def weighted_log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Sample-weighted (1/2/4) multi-class log loss of one condition group, in float64 and clipped
    as sklearn does: Kaggle's group loss."""
    y = np.asarray(y)
    return float(log_loss(y, as_probabilities(probs), sample_weight=SAMPLE_WEIGHTS[y], labels=LABELS))


def any_severe_spinal_loss(study_ids: np.ndarray, y: np.ndarray, probs: np.ndarray) -> float:
    """Per study: label = any level Severe, prediction = max P(severe) over its levels (rows
    normalised first), weight = max level weight; a weighted binary log loss, in float64."""
    y = np.asarray(y)
    df = pd.DataFrame({"study": study_ids, "severe": (y == 2).astype(int), "p": as_probabilities(probs)[:, 2],
                       "w": SAMPLE_WEIGHTS[y]})
    per_study = df.groupby("study").agg(severe=("severe", "max"), p=("p", "max"), w=("w", "max"))
    # a 1-D prediction is P(positive): sklearn makes it [1 - p, p] and clips, as for Kaggle's call
    return float(log_loss(per_study["severe"].to_numpy(), per_study["p"].to_numpy(),
                          sample_weight=per_study["w"].to_numpy(), labels=[0, 1]))


def competition_score_spinal(study_ids: np.ndarray, y: np.ndarray, probs: np.ndarray) -> float:
    """Mean of the spinal group loss and any_severe_spinal: the competition score restricted to spinal.
    Kaggle scores every labelled level of every study, so the rows must include the levels the model
    could not see (harness.metrics.classification.ValidationScorer adds them)."""
    return (weighted_log_loss(y, probs) + any_severe_spinal_loss(study_ids, y, probs)) / 2


@dataclass(frozen=True)
class Fallback:
    """The labelled levels of the validation studies that the model has nothing to look at (no
    coordinate, no image file, a point on another series type), with the prediction they get."""

    study_ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray  # (n, 3) float64, each row the same stated prediction

    @classmethod
    def none(cls) -> "Fallback":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ValidationScorer:
    """Every validation figure of one epoch. BA, recalls, precisions and the weighted log loss cover
    the samples the model saw; the competition score covers every labelled level of the validation
    studies, the unseen ones predicted by the fallback, as Kaggle would score them."""

    study_ids: np.ndarray  # of the model's samples, in loader order
    spinal: bool
    fallback: Fallback = field(default_factory=Fallback.none)

    def __call__(self, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        out = classification_metrics(y, probs)
        if self.spinal:
            ids, labels, p = self.all_levels(y, probs)
            out["competition/spinal_log_loss"] = weighted_log_loss(labels, p)
            out["competition/any_severe_spinal_log_loss"] = any_severe_spinal_loss(ids, labels, p)
            out["competition_score_spinal"] = (out["competition/spinal_log_loss"]
                                               + out["competition/any_severe_spinal_log_loss"]) / 2
        return out

    def all_levels(self, y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Study ids, labels and float64 probabilities of every labelled level: the model's rows first."""
        fb = self.fallback
        return (np.concatenate([self.study_ids, fb.study_ids]), np.concatenate([y, fb.labels]),
                np.concatenate([np.asarray(probs, dtype=np.float64), fb.probs]))


def confusion(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return confusion_matrix(y, probs.argmax(1), labels=LABELS)


def dead_classes(pred_counts: np.ndarray, minimum: int) -> list[str]:
    """Classes predicted fewer than `minimum` times (the v8-v10 dead-class monitor)."""
    return [CLASS_KEYS[k] for k in range(3) if pred_counts[k] < minimum]
