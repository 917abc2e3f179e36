"""`harness compare`: finished runs side by side, per class, with intervals, paired tests against a
baseline and the runs' health alarms (README "Comparing versions").

Runs come from MLflow: the latest FINISHED run per (variant, fold, seed) for the folds asked, on the
baseline's dataset, or explicit run ids. The runs of one fold must have validated on the same samples
(fold fingerprint). Two levels of statistics: model level pairs the runs' predictions sample by sample
(harness.compare.stats: these trained models); version level pairs whole runs by (fold, seed) and counts
seed, fold and sample noise (harness.compare.version_level: these recipes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import precision_score

from harness.core.competition import CLASS_KEYS
from harness.core.errors import HarnessError, UsageError
from harness.metrics.classification import competition_score_spinal, weighted_log_loss
from harness.tracking import reader

SAMPLE_KEY = ["study_id", "level"]


@dataclass
class RunRecord:
    """One finished training run as compare needs it."""

    run_id: str
    variant: str
    seed: str
    fold_fp: str
    data_fp: str
    predictions: pd.DataFrame  # val_predictions.csv's model rows, sorted by (study_id, level)
    history: pd.DataFrame  # epoch -> per-epoch validation metrics
    metrics: dict[str, float]
    tags: dict[str, str]
    params: dict[str, str]
    seconds: float
    alarms: dict[str, str] = field(default_factory=dict)
    fallback: pd.DataFrame = field(default_factory=pd.DataFrame)  # the rows the fallback prediction scored
    # val_predictions_last.csv's model rows: the last epoch, which no selection on this fold chose (None: older run)
    last: pd.DataFrame | None = None

    @property
    def fold(self) -> int:
        return int(self.tags.get("harness.fold", -1))

    @property
    def labels(self) -> np.ndarray:
        return self.predictions["label"].to_numpy()

    @property
    def preds(self) -> np.ndarray:
        return self.predictions["prediction"].to_numpy()

    @property
    def probs(self) -> np.ndarray:
        return self.predictions[list(CLASS_KEYS)].to_numpy(np.float64)  # the metrics normalise rows, as Kaggle

    def competition_score_spinal(self) -> float:
        """Kaggle's spinal score over every labelled level the run wrote: model rows and fallback rows."""
        rows = pd.concat([self.predictions, self.fallback])
        return competition_score_spinal(rows["study_id"].to_numpy(), rows["label"].to_numpy(),
                                        rows[list(CLASS_KEYS)].to_numpy(np.float64))


def _model_rows(preds: pd.DataFrame) -> pd.Series:
    # runs before the fallback rows existed have no `source` column: every row is the model's
    return preds["source"].eq("model") if "source" in preds else pd.Series(True, index=preds.index)


def load_run(run) -> RunRecord:
    """Predictions (selected epoch, and last epoch where written), metric history, tags and timing of one run."""
    rid, tags = run.info.run_id, run.data.tags
    preds = reader.csv_artifact(rid, "val_predictions.csv")
    if preds is None:
        raise HarnessError(f"run {rid} ({tags.get('harness.variant')}) has no val_predictions.csv artifact")
    last = reader.csv_artifact(rid, "val_predictions_last.csv")
    history = pd.DataFrame({
        key: pd.Series(reader.metric_history(rid, f"val/{key}"))
        for key in ("balanced_accuracy", *(f"recall/{c}" for c in CLASS_KEYS))}).sort_index()
    for loss in ("train/loss", "val/loss"):
        history[loss] = pd.Series(reader.metric_history(rid, loss))
    seconds = ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000
    alarms = {k.removeprefix("harness.alarm."): v for k, v in tags.items() if k.startswith("harness.alarm.")}
    model = _model_rows(preds)
    if last is not None:
        last = last[_model_rows(last)].sort_values(SAMPLE_KEY).reset_index(drop=True)
    return RunRecord(rid, tags.get("harness.variant", "?"), tags.get("harness.seed", "?"),
                     tags.get("harness.fold_fingerprint", ""), tags.get("harness.data_fingerprint", ""),
                     preds[model].sort_values(SAMPLE_KEY).reset_index(drop=True), history, dict(run.data.metrics),
                     tags, dict(run.data.params), seconds, alarms, preds[~model].reset_index(drop=True), last)


def find_runs(variants: list[str], folds: list[int] | int, run_ids: list[str],
              seeds: list[int] | None = None) -> dict[str, list[RunRecord]]:
    """variant -> its runs: the explicit ids, else the latest per (fold, seed) on the first variant's dataset,
    for the folds given and the seeds given (None: every seed)."""
    folds = [folds] if isinstance(folds, int) else folds
    if run_ids:
        found: dict[str, list[RunRecord]] = {}
        for rid in run_ids:
            run = reader.find_run(rid)
            if run is None:  # an unknown id is the user's mistake
                raise UsageError(f"--runs {rid}: no such run in {reader.tracking_uri()}")
            record = load_run(run)
            found.setdefault(record.variant, []).append(record)
        return found
    found, data_fp = {}, None
    wanted = None if seeds is None else {str(s) for s in seeds}
    for variant in variants:
        latest: dict[tuple, object] = {}
        for fold in folds:
            for run in reader.finished_runs(variant, fold):
                fp, seed = run.data.tags.get("harness.data_fingerprint"), run.data.tags.get("harness.seed")
                data_fp = data_fp or fp  # the first variant's newest run fixes the dataset
                if fp == data_fp and (wanted is None or seed in wanted):
                    latest.setdefault((fold, seed), run)
        if latest:
            found[variant] = [load_run(run) for run in latest.values()]
    return found


def check_shared_samples(runs: dict[str, list[RunRecord]]):
    """Refuse runs of one fold that validated on different samples: their differences would mean nothing."""
    records = [r for rs in runs.values() for r in rs]
    for fold in sorted({r.fold for r in records}):
        prints = {(r.fold_fp, r.variant, r.run_id) for r in records if r.fold == fold}
        if len({fp for fp, _, _ in prints}) > 1:
            lines = "; ".join(f"{v} {rid[:8]}: {fp}" for fp, v, rid in sorted(prints))
            raise HarnessError(f"the runs of fold {fold} validated on different samples (fold fingerprints differ: "
                               f"{lines}); compare runs of one dataset")


def predictions_frame(records: list[RunRecord], epoch: str = "selected") -> pd.DataFrame:
    """A variant's runs as the statistics pool them: one row per (fold, seed, sample). `epoch`: "selected"
    (val_predictions.csv, the notebooks' epoch) or "last" (val_predictions_last.csv)."""
    frames = []
    for r in records:
        preds = r.predictions if epoch == "selected" else r.last
        frames.append(preds[SAMPLE_KEY + ["label"]].assign(pred=preds["prediction"].to_numpy(), fold=r.fold,
                                                           seed=r.seed))
    return pd.concat(frames, ignore_index=True)


def variant_summary(records: list[RunRecord], pooled: dict) -> dict:
    """Per variant: the selected epoch's metrics, with Jeffreys (recall) and MOVER (BA) intervals on its
    pooled runs."""
    first, intervals = records[0], pooled["intervals"]
    labels = np.concatenate([r.labels for r in records])
    preds = np.concatenate([r.preds for r in records])
    precision = precision_score(labels, preds, labels=[0, 1, 2], average=None, zero_division=0)
    per_run = lambda score: float(np.mean([score(r) for r in records]))
    return {
        "variant": first.variant, "runs": [r.run_id for r in records], "seeds": [r.seed for r in records],
        "balanced_accuracy": intervals["balanced_accuracy"],
        "recall": {c: intervals[f"recall/{c}"] for c in CLASS_KEYS},
        "precision": {c: float(p) for c, p in zip(CLASS_KEYS, precision)},
        "ba_per_run": pooled["run_ba"], "ba_mean": pooled["mean_ba"],
        "ba_std": None if np.isnan(pooled["std_ba"]) else pooled["std_ba"],
        "final_ba": float(np.mean([r.history["balanced_accuracy"].iloc[-1] for r in records])),
        "best_epoch": [int(r.metrics.get("best/epoch", 0)) for r in records],
        "weighted_log_loss": per_run(lambda r: weighted_log_loss(r.labels, r.probs)),
        "competition_score_spinal": (per_run(RunRecord.competition_score_spinal)
                                     if first.tags.get("harness.condition") == "spinal_canal_stenosis" else None),
        "parameters": int(first.params.get("model.parameters", 0)) or None,
        "train_seconds": float(np.mean([r.seconds for r in records])),
        "alarms": sorted({name for r in records for name in r.alarms}),
    }
