"""A reference copy of the RSNA 2024 lumbar competition metric, written from its published definition
(docs/data.md, "The competition metric") and kept apart from harness.metrics.classification, so the tests can
check the harness against it. It works on Kaggle's own tables: a solution (row_id, one-hot
normal_mild/moderate/severe, sample_weight) and a submission (row_id, three probabilities)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

TARGETS = ["normal_mild", "moderate", "severe"]
GROUPS = ("spinal", "foraminal", "subarticular")


def score(solution: pd.DataFrame, submission: pd.DataFrame, any_severe_scalar: float = 1.0) -> float:
    """Kaggle's score(): each group's weighted log loss on row-normalised predictions, plus
    any_severe_spinal, then their weighted mean. Groups with no rows are left out (a one-condition run)."""
    solution = solution.sort_values("row_id").reset_index(drop=True)
    submission = submission.sort_values("row_id").reset_index(drop=True)
    assert (solution["row_id"].to_numpy() == submission["row_id"].to_numpy()).all()
    submission[TARGETS] = submission[TARGETS].div(submission[TARGETS].sum(axis=1), axis=0)
    study = solution["row_id"].str.split("_").str[0]
    group = solution["row_id"].map(lambda r: next(g for g in GROUPS if g in r))
    losses, weights = [], []
    for g in GROUPS:
        rows = group == g
        if rows.any():
            losses.append(log_loss(solution.loc[rows, TARGETS].to_numpy(), submission.loc[rows, TARGETS].to_numpy(),
                                   sample_weight=solution.loc[rows, "sample_weight"].to_numpy()))
            weights.append(1.0)
    spinal = group == "spinal"
    labels = solution[spinal].groupby(study[spinal])["severe"].max()
    sample_weight = solution[spinal].groupby(study[spinal])["sample_weight"].max()
    preds = submission[spinal].groupby(study[spinal])["severe"].max()
    losses.append(log_loss(labels.to_numpy(), preds.to_numpy(), sample_weight=sample_weight.to_numpy(), labels=[0, 1]))
    weights.append(any_severe_scalar)
    return float(np.average(losses, weights=weights))


def tables(study_ids, levels, labels, probs, condition: str = "spinal_canal_stenosis"):
    """Kaggle's solution and submission tables for rows of one condition."""
    labels = np.asarray(labels)
    row_id = [f"{s}_{condition}_{lvl}" for s, lvl in zip(study_ids, levels)]
    solution = pd.DataFrame({"row_id": row_id, **{t: (labels == k).astype(int) for k, t in enumerate(TARGETS)},
                             "sample_weight": np.array([1.0, 2.0, 4.0])[labels]})
    submission = pd.DataFrame({"row_id": row_id, **{t: np.asarray(probs, np.float64)[:, k] for k,
                                                    t in enumerate(TARGETS)}})
    return solution, submission


def spinal_score(study_ids, levels, labels, probs) -> float:
    """The reference score of spinal rows alone: (spinal group loss + any_severe_spinal) / 2."""
    return score(*tables(study_ids, levels, labels, probs))
