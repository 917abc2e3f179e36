"""What a run matrix's parent holds once every cell is FINISHED: each cell's BA, the mean and SD over
cells, per fold and per seed, and the out-of-fold (OOF) figures of each seed: every sample predicted
once per seed, by the model of the fold it was validated on, scored over the folds of the matrix.

The cells' figures are the notebooks' (epoch selected on the scored fold: optimistic); the OOF
figures pool the same predictions, so they carry the same selection. Beside them, the fair ones: each
cell's last epoch (a fixed epoch count, selected on no fold; last/* and val_predictions_last.csv),
as cells.csv's last_* columns, ba_last/* and oof_last/* (the same OOF computation on those
predictions). A cell trained before runs kept their last epoch has none, and the fair figures are
then left out with a note.
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
LAST_PREDICTIONS = "val_predictions_last.csv"  # a run's last epoch (harness.training.summary)


def cell_table(plans: list[RunPlan], run_ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """One row per cell (fold, seed, run_id, its best/* figures, then its last/* ones as last_<name>),
    every cell's val_predictions.csv rows with their fold and seed, the same of every cell's
    val_predictions_last.csv, and how many cells have none (trained before runs kept it)."""
    rows, predictions, last = [], [], []
    for plan, run_id in zip(plans, run_ids, strict=True):
        run = reader.find_run(run_id)
        fold, seed = plan.cfg.fold, plan.cfg.train.seed
        rows.append({"fold": fold, "seed": seed, "run_id": run_id,
                     **{k: run.data.metrics.get(f"best/{k}", np.nan) for k in CELL_METRICS},
                     **{f"last_{k}": run.data.metrics.get(f"last/{k}", np.nan) for k in CELL_METRICS}})
        preds = pd.read_csv(reader.artifact(run_id, "val_predictions.csv"), keep_default_na=False)
        predictions.append(preds.assign(fold=fold, seed=seed, run_id=run_id))
        preds = reader.csv_artifact(run_id, LAST_PREDICTIONS)
        last.append(None if preds is None else preds.assign(fold=fold, seed=seed, run_id=run_id))
    found = [p for p in last if p is not None]
    fair = pd.concat(found, ignore_index=True) if found else pd.DataFrame()
    return pd.DataFrame(rows), pd.concat(predictions, ignore_index=True), fair, len(last) - len(found)


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


def aggregates(cells: pd.DataFrame, oof: pd.DataFrame, oof_last: pd.DataFrame | None = None) -> dict[str, float]:
    """The parent's metrics: mean and SD over cells, per fold and per seed, and the OOF figures; with
    `oof_last` (out_of_fold of the last epochs' predictions) also the fair ones, ba_last/* and oof_last/*."""
    ba = cells["balanced_accuracy"]
    out = {"cells": len(cells), "ba/mean": ba.mean(), "ba/sd": _sd(ba)}
    for fold, rows in cells.groupby("fold"):
        out[f"ba/fold{fold}"] = rows["balanced_accuracy"].mean()
    for seed, rows in cells.groupby("seed"):
        out[f"ba/seed{seed}"] = rows["balanced_accuracy"].mean()
    if cells["fold"].nunique() > 1:  # seed-averaged BA per fold: how much the folds differ
        out["ba/fold_sd"] = cells.groupby("fold")["balanced_accuracy"].mean().std(ddof=1)
    if cells["seed"].nunique() > 1:  # per fold, the SD over seeds, averaged: what a new seed moves
        out["ba/seed_sd"] = cells.groupby("fold")["balanced_accuracy"].std(ddof=1).mean()
    out |= _oof_metrics("oof", oof)
    if oof_last is not None:
        last = cells["last_balanced_accuracy"]
        out |= {"ba_last/mean": last.mean(), "ba_last/sd": _sd(last)} | _oof_metrics("oof_last", oof_last)
    return {k: float(v) for k, v in out.items()}


def _sd(values: pd.Series) -> float:
    return values.std(ddof=1) if len(values) > 1 else 0.0


def _oof_metrics(prefix: str, oof: pd.DataFrame) -> dict[str, float]:
    """out_of_fold's figures as metrics: the mean over seeds, and each seed's."""
    out = {}
    for key in [k for k in oof.columns if k not in ("seed", "folds", "samples")]:
        out[f"{prefix}/{key}"] = oof[key].mean()
        for seed, value in zip(oof["seed"], oof[key]):
            out[f"{prefix}/seed{seed}/{key}"] = value
    return out


def summarise(plans: list[RunPlan], run_ids: list[str], writer: RunWriter) -> list[str]:
    """Write the aggregates, cells.csv, oof_predictions.csv (and oof_predictions_last.csv) and the strip
    plot to the parent; return the lines the console prints."""
    cells, predictions, last, missing = cell_table(plans, run_ids)
    spinal = plans[0].cfg.data.condition == "spinal_canal_stenosis"
    oof = out_of_fold(predictions, spinal)
    oof_last = out_of_fold(last, spinal) if not missing else None  # fair figures only over every cell
    values = aggregates(cells, oof, oof_last)
    writer.metrics(values)
    writer.text(cells.to_csv(index=False), "cells.csv")
    writer.text(predictions.to_csv(index=False), "oof_predictions.csv")
    if oof_last is not None:
        writer.text(last.to_csv(index=False), "oof_predictions_last.csv")
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
    lines.append(_fair_line(values, cells, spinal) if oof_last is not None else
                 f"fair figures (last epoch) left out: {missing} of {len(cells)} cell(s) have no "
                 f"{LAST_PREDICTIONS} (trained before runs kept their last epoch)")
    summary = "\n\n".join(lines)
    writer.tags({"mlflow.note.content": summary})
    return lines


def _fair_line(values: dict[str, float], cells: pd.DataFrame, spinal: bool) -> str:
    return (f"fair figures, each cell's last epoch (fixed epoch count, not selected on the scored folds): "
            f"out-of-fold BA {values['oof_last/balanced_accuracy']:.3f}"
            + (f", competition score {values['oof_last/competition_score_spinal']:.4f}" if spinal else "")
            + f"; BA mean {values['ba_last/mean']:.3f}, SD {values['ba_last/sd']:.3f} over {len(cells)} cells")
