"""What a run matrix's parent holds once every cell is FINISHED: each cell's BA, the mean and SD over
cells, per fold and per seed, and the out-of-fold (OOF) figures of each seed: every sample predicted
once per seed, by the model of the fold it was validated on, scored over the folds of the matrix.

The cells' figures are the notebooks' (epoch selected on the scored fold: optimistic); the OOF
figures pool the same predictions, so they carry the same selection.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from harness.core.competition import CLASS_KEYS
from harness.metrics.classification import classification_metrics, competition_score_spinal
from harness.tracking import plots, reader
from harness.tracking.writer import RunWriter
from harness.training.plan import RunPlan

CELL_METRICS = ("balanced_accuracy", *(f"recall/{c}" for c in CLASS_KEYS), "competition_score_spinal")


def cell_table(plans: list[RunPlan], run_ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per cell (fold, seed, run_id, its best/* figures) and every cell's val_predictions.csv
    rows with their fold and seed."""
    rows, predictions = [], []
    for plan, run_id in zip(plans, run_ids, strict=True):
        run = reader.find_run(run_id)
        fold, seed = plan.cfg.fold, plan.cfg.train.seed
        rows.append({"fold": fold, "seed": seed, "run_id": run_id,
                     **{k: run.data.metrics.get(f"best/{k}", np.nan) for k in CELL_METRICS}})
        preds = pd.read_csv(reader.artifact(run_id, "val_predictions.csv"), keep_default_na=False)
        predictions.append(preds.assign(fold=fold, seed=seed, run_id=run_id))
    return pd.DataFrame(rows), pd.concat(predictions, ignore_index=True)


def out_of_fold(predictions: pd.DataFrame, spinal: bool) -> pd.DataFrame:
    """Per seed: BA and recalls over every model-predicted sample of the matrix's folds, and Kaggle's
    score over every labelled level (fallback rows included), as one submission would be scored."""
    out = []
    for seed, rows in predictions.groupby("seed", sort=True):
        model = rows[rows["source"] == "model"] if "source" in rows else rows
        probs = model[list(CLASS_KEYS)].to_numpy(np.float64)
        m = classification_metrics(model["label"].to_numpy(), probs)
        row = {"seed": seed, "folds": rows["fold"].nunique(), "samples": len(model),
               **{k: m[k] for k in ("balanced_accuracy", *(f"recall/{c}" for c in CLASS_KEYS))}}
        if spinal:
            row["competition_score_spinal"] = competition_score_spinal(
                rows["study_id"].to_numpy(), rows["label"].to_numpy(), rows[list(CLASS_KEYS)].to_numpy(np.float64))
        out.append(row)
    return pd.DataFrame(out)


def aggregates(cells: pd.DataFrame, oof: pd.DataFrame) -> dict[str, float]:
    """The parent's metrics: mean and SD over cells, per fold and per seed, and the OOF figures."""
    ba = cells["balanced_accuracy"]
    out = {"cells": len(cells), "ba/mean": ba.mean(), "ba/sd": ba.std(ddof=1) if len(cells) > 1 else 0.0}
    for fold, rows in cells.groupby("fold"):
        out[f"ba/fold{fold}"] = rows["balanced_accuracy"].mean()
    for seed, rows in cells.groupby("seed"):
        out[f"ba/seed{seed}"] = rows["balanced_accuracy"].mean()
    if cells["fold"].nunique() > 1:  # seed-averaged BA per fold: how much the folds differ
        out["ba/fold_sd"] = cells.groupby("fold")["balanced_accuracy"].mean().std(ddof=1)
    if cells["seed"].nunique() > 1:  # per fold, the SD over seeds, averaged: what a new seed moves
        out["ba/seed_sd"] = cells.groupby("fold")["balanced_accuracy"].std(ddof=1).mean()
    for key in [k for k in oof.columns if k not in ("seed", "folds", "samples")]:
        out[f"oof/{key}"] = oof[key].mean()
        for seed, value in zip(oof["seed"], oof[key]):
            out[f"oof/seed{seed}/{key}"] = value
    return {k: float(v) for k, v in out.items()}


def summarise(plans: list[RunPlan], run_ids: list[str], writer: RunWriter) -> list[str]:
    """Write the aggregates, cells.csv, oof_predictions.csv and the strip plot to the parent; return
    the lines the console prints."""
    cells, predictions = cell_table(plans, run_ids)
    spinal = plans[0].cfg.data.condition == "spinal_canal_stenosis"
    oof = out_of_fold(predictions, spinal)
    values = aggregates(cells, oof)
    writer.metrics(values)
    writer.text(cells.to_csv(index=False), "cells.csv")
    writer.text(predictions.to_csv(index=False), "oof_predictions.csv")
    variant = plans[0].cfg.variant
    fig = plots.matrix_cells(cells, f"{variant}: {len(cells)} cells")
    writer.figure(fig, "cells.png")
    plt.close(fig)
    parts = [f"{name} SD {values[key]:.3f}" for name, key in (("seed", "ba/seed_sd"), ("fold", "ba/fold_sd"))
             if key in values]
    lines = [f"matrix of {len(cells)} cells: BA mean {values['ba/mean']:.3f}, SD {values['ba/sd']:.3f} over cells"
             + (f" ({', '.join(parts)})" if parts else "")]
    folds = cells["fold"].nunique()
    lines.append(f"out-of-fold over {folds} fold(s), mean of {len(oof)} seed(s): "
                 f"BA {values['oof/balanced_accuracy']:.3f}"
                 + (f", competition score {values['oof/competition_score_spinal']:.4f}" if spinal else "")
                 + "; epochs selected on the scored folds, so these figures are optimistic")
    summary = "\n\n".join(lines)
    writer.tags({"mlflow.note.content": summary})
    return lines
