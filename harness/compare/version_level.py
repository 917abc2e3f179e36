"""`harness compare`'s version level: is v9 a better *recipe* than v4? Every (fold, seed) cell both variants
have, paired by fold and seed, tested with harness.compare.versions' primary (the corrected hierarchical
bootstrap), Holm across the variants, a variance budget per variant and a plan for what would resolve the
difference.

Which epoch: each run's last epoch (val_predictions_last.csv: a fixed epoch count, chosen by no look at the
scored fold) when every run has it, else the selected epoch (the notebooks' figure, optimistic: it was chosen
on the very fold it is scored on); `epoch` says which the verdict used.
"""
from __future__ import annotations

import math

from harness.compare import stats, versions
from harness.compare.runs import RunRecord, predictions_frame

EPOCH_NOTES = {
    "last": "last epoch of each run (a fixed epoch count, not selected on the scored fold)",
    "selected": "selected epoch of each run (chosen on the scored fold, so optimistic: these runs have no "
                "val_predictions_last.csv)",
}


def epoch_used(runs: dict[str, list[RunRecord]], order: list[str]) -> str:
    """"last" when every run wrote its last epoch's predictions, else "selected"."""
    return "last" if all(r.last is not None for v in order for r in runs[v]) else "selected"


def stopped_short(run: RunRecord) -> bool:
    """Early stopping ended the run before train.epochs (its last epoch was then chosen by the scored fold)."""
    last, epochs = run.metrics.get("last/epoch"), run.params.get("train.epochs")
    return last is not None and epochs is not None and last < float(epochs)


def finite(value):
    """NaN and infinity as None, all the way down: the report is JSON (`--json`, comparison.json)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def version_level(runs: dict[str, list[RunRecord]], order: list[str], baseline: str, seed: int = 0,
                  n_boot: int = 2000) -> dict:
    """{"epoch", "epoch_note", "method", "budget" ({variant: variance budget}), "rows" (one per other variant:
    compare_versions' result with "variant", "baseline", "p_holm" and the verdict at the Holm-adjusted p)}."""
    epoch = epoch_used(runs, order)
    note = EPOCH_NOTES[epoch]
    stopped = sum(stopped_short(r) for v in order for r in runs[v])
    if epoch == "last" and stopped:
        note += (f"; {stopped} of {sum(len(runs[v]) for v in order)} runs stopped early (train.patience), so their "
                 "last epoch was chosen by reading the scored fold too; set train.patience to train.epochs or more "
                 "for a strictly fixed count")
    cells = {v: versions.cells_from_frame(predictions_frame(runs[v], epoch)) for v in order}
    rows, tested = [], []
    for v in (v for v in order if v != baseline):
        try:
            result = versions.compare_versions(cells[baseline], cells[v], baseline, v, seed=seed, n_boot=n_boot)
        except ValueError as exc:  # no (fold, seed) in common, or the cells' samples disagree
            rows.append({"variant": v, "baseline": baseline, "verdict": f"{v} vs {baseline}: not compared ({exc})"})
            continue
        result.pop("variance")  # the budgets below, once per variant
        rows.append({"variant": v, "baseline": baseline, **result})
        tested.append(rows[-1])
    for row, p in zip(tested, stats.holm([r["p_value"] for r in tested])):
        row["p_holm"] = p
        row["verdict"] = versions.verdict(row, adjusted_p=p)
    budget = {v: versions.variance_budget(cells[v]) for v in order}
    return finite({"epoch": epoch, "epoch_note": note, "stopped_early": stopped, "method": versions.PRIMARY,
                   "budget": budget, "rows": rows})
