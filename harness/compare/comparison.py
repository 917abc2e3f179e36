"""The whole comparison as plain data (what `harness compare --json` prints), at two levels:

- model level (`against_baseline`): the runs' predictions paired sample by sample, every seed and fold
  pooled; a statement about these trained models (harness.compare.stats);
- version level (`version_level`): the runs paired by (fold, seed), seed, fold and sample noise counted; a
  statement about the recipes (harness.compare.version_level).
"""
from __future__ import annotations

import numpy as np

from harness.compare import stats
from harness.compare.runs import RunRecord, check_shared_samples, predictions_frame, variant_summary
from harness.compare.version_level import version_level


def model_level(runs: dict[str, list[RunRecord]], order: list[str], baseline: str, seed: int) -> tuple[list, list]:
    """(per-variant summaries, rows against the baseline): the pooled paired tests with Holm across variants."""
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
            rows.append({"variant": v, "baseline": baseline, "level": "model",
                         "verdict": f"{v} has no run on a fold and seed {baseline} has"})
            continue
        paired = results[v]["n_paired_runs"]
        rows.append({"variant": v, "baseline": baseline, "level": "model", **d, "p_holm": adjusted[v],
                     "paired_runs": paired, "verdict": stats.verdict(d, adjusted[v], baseline, v, runs=paired)})
    return summaries, rows


def compare(runs: dict[str, list[RunRecord]], order: list[str], baseline: str, seed: int = 0) -> dict:
    """Both levels; `order` starts with the baseline. The version level is there when some variant has more
    than one (fold, seed) cell in common with the baseline: one cell is two trained models, which the model
    level already tests."""
    check_shared_samples(runs)
    summaries, rows = model_level(runs, order, baseline, seed)
    folds = sorted({r.fold for r in runs[baseline]})
    first_of_fold = {r.fold: r for r in reversed(runs[baseline])}
    labels = np.concatenate([first_of_fold[f].labels for f in folds])
    report = {"fold": folds[0] if len(folds) == 1 else None, "folds": folds, "baseline": baseline,
              "data_fingerprint": runs[baseline][0].data_fp,
              "fold_fingerprint": runs[baseline][0].fold_fp if len(folds) == 1 else None,
              "validation_samples": int(len(labels)), "class_counts": np.bincount(labels, minlength=3).tolist(),
              "variants": summaries, "against_baseline": rows}
    versions = version_level(runs, order, baseline, seed)
    if any(r.get("n_cells", 0) > 1 for r in versions["rows"]):
        report["version_level"] = versions
    return report


def where(report: dict) -> str:
    """'fold 0' or 'folds 0, 1, 2': what the numbers were measured on."""
    folds = report["folds"]
    return f"fold {folds[0]}" if len(folds) == 1 else "folds " + ", ".join(map(str, folds))
