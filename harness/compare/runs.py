"""`harness compare`: finished runs side by side, per class, with intervals, paired tests against a
baseline and the runs' health alarms (README "Comparing versions").

Runs come from MLflow: the latest FINISHED run per (variant, seed) for the fold, on the baseline's
dataset, or explicit run ids. Every run must have validated on the same samples (fold fingerprint);
the statistics pair the runs' predictions sample by sample (harness.compare.stats).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import precision_score

from harness.compare import stats
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


def load_run(run) -> RunRecord:
    """Predictions, metric history, tags and timing of one finished run."""
    rid, tags = run.info.run_id, run.data.tags
    try:
        preds = pd.read_csv(reader.artifact(rid, "val_predictions.csv"), keep_default_na=False)
    except Exception:  # noqa: BLE001 - any failure means the run has no usable predictions
        raise HarnessError(f"run {rid} ({tags.get('harness.variant')}) has no val_predictions.csv artifact") from None
    history = pd.DataFrame({
        key: pd.Series(reader.metric_history(rid, f"val/{key}"))
        for key in ("balanced_accuracy", *(f"recall/{c}" for c in CLASS_KEYS))}).sort_index()
    for loss in ("train/loss", "val/loss"):
        history[loss] = pd.Series(reader.metric_history(rid, loss))
    seconds = ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000
    alarms = {k.removeprefix("harness.alarm."): v for k, v in tags.items() if k.startswith("harness.alarm.")}
    # runs before the fallback rows existed have no `source` column: every row is the model's
    model = preds["source"].eq("model") if "source" in preds else pd.Series(True, index=preds.index)
    return RunRecord(rid, tags.get("harness.variant", "?"), tags.get("harness.seed", "?"),
                     tags.get("harness.fold_fingerprint", ""), tags.get("harness.data_fingerprint", ""),
                     preds[model].sort_values(SAMPLE_KEY).reset_index(drop=True), history, dict(run.data.metrics),
                     tags, dict(run.data.params), seconds, alarms, preds[~model].reset_index(drop=True))


def find_runs(variants: list[str], fold: int, run_ids: list[str]) -> dict[str, list[RunRecord]]:
    """variant -> its runs: the explicit ids, else the latest per seed on the first variant's dataset."""
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
    for variant in variants:
        latest: dict[str, object] = {}
        for run in reader.finished_runs(variant, fold):
            fp = run.data.tags.get("harness.data_fingerprint")
            data_fp = data_fp or fp  # the first variant's newest run fixes the dataset
            if fp == data_fp:
                latest.setdefault(run.data.tags.get("harness.seed"), run)
        if latest:
            found[variant] = [load_run(run) for run in latest.values()]
    return found


def check_shared_samples(runs: dict[str, list[RunRecord]]):
    """Refuse runs that validated on different samples: their differences would mean nothing."""
    prints = {(r.fold_fp, r.variant, r.run_id) for records in runs.values() for r in records}
    if len({fp for fp, _, _ in prints}) > 1:
        lines = "; ".join(f"{v} {rid[:8]}: {fp}" for fp, v, rid in sorted(prints))
        raise HarnessError(f"the runs validated on different samples (fold fingerprints differ: {lines}); "
                           "compare runs of one fold on one dataset")


def predictions_frame(records: list[RunRecord]) -> pd.DataFrame:
    """A variant's runs as compare_stats pools them: one row per (fold, seed, sample)."""
    return pd.concat([r.predictions[SAMPLE_KEY + ["label"]].assign(
        pred=r.preds, fold=r.tags.get("harness.fold"), seed=r.seed) for r in records], ignore_index=True)


def variant_summary(records: list[RunRecord], pooled: dict) -> dict:
    """Per variant: the selected epoch's metrics, with bootstrap intervals on its pooled runs."""
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


def compare(runs: dict[str, list[RunRecord]], order: list[str], baseline: str, seed: int = 0) -> dict:
    """The whole comparison as plain data (what --json prints); `order` starts with the baseline."""
    check_shared_samples(runs)
    frames = {v: predictions_frame(runs[v]) for v in order}
    others = [v for v in order if v != baseline]
    results = {v: stats.pooled(frames[baseline], frames[v], seed=seed) for v in others}
    base = (results[others[0]] if others else stats.pooled(frames[baseline], frames[baseline], seed=seed))["a"]
    summaries = [variant_summary(runs[baseline], base)] + [variant_summary(runs[v], results[v]["b"]) for v in others]
    paired_rows = [v for v in others if results[v]["difference"] is not None]
    adjusted = dict(zip(paired_rows, stats.holm([results[v]["difference"]["p_value"] for v in paired_rows])))
    rows = []
    for v in others:
        d = results[v]["difference"]
        if d is None:  # seeds do not match: nothing to pair
            rows.append({"variant": v, "baseline": baseline, "verdict": f"{v} has no run on a seed {baseline} has"})
            continue
        rows.append({"variant": v, "baseline": baseline, **d, "p_holm": adjusted[v],
                     "paired_runs": results[v]["n_paired_runs"],
                     "verdict": stats.verdict(d, adjusted[v], baseline, v)})
    first = runs[baseline][0]
    return {"fold": int(first.tags.get("harness.fold", -1)), "baseline": baseline,
            "data_fingerprint": first.data_fp, "fold_fingerprint": first.fold_fp,
            "validation_samples": len(first.predictions),
            "class_counts": np.bincount(first.labels, minlength=3).tolist(),
            "variants": summaries, "against_baseline": rows}
