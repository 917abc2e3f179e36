"""Statistics of `harness compare` at model level: intervals, paired differences, permutation p-values, Holm.

Inputs are argmax predictions on the same validation samples. Balanced accuracy (BA) is the plain
mean of the three per-class recalls, as in `harness.metrics.classification` (an absent class counts 0).
These ask whether two *trained models* differ beyond sample noise; whether one *version* beats another
(seeds and folds included) is `harness.compare.versions`.

Intervals (benchmarks/calibration.md). A recall is a binomial proportion, so its interval is Jeffreys'
(the Beta(x + 1/2, n - x + 1/2) quantiles, 0 or 1 at the ends): on the demo's 6 Severe samples it covers
the true recall 95.5% of the time averaged over recalls 0.05-0.95 (91-99% at any one recall: 7 possible
counts), where the class-stratified percentile bootstrap covers 74% (57% in the audit of issue 17) and is
zero-width whenever all 6 are right or all wrong. BA's interval combines the three recall intervals by
MOVER (Newcombe's method of recovering variance estimates from the bounds: BA ± sqrt(Σ (recall - bound)²)
/ 3): 93-94% on the demo's fold, where the bootstrap percentile interval of BA covers 89-91%; on large
classes the two agree. With several seeds pooled, a recall's rows are not independent trials: Jeffreys then
uses the effective number of trials p(1 - p) / var, var the cluster (sample) variance of the pooled recall,
kept between the number of samples and the number of rows. The bootstrap percentiles stay available as
`bootstrap_low` / `bootstrap_high`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import beta, permutation_test
from sklearn.metrics import recall_score

from harness.compare.version_cells import SEEDS_TO_RUN
from harness.core.competition import CLASS_KEYS
from harness.metrics.classification import LABELS

SAMPLE_KEY = ["fold", "study_id", "level"]  # one validation sample
RUN_KEY = ["fold", "seed"]  # one run of a variant
PERMUTATION_BATCH = 1000  # permutations evaluated at once: bounds memory on large pooled sets


def recall_intervals(labels, preds, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
                     clusters=None) -> dict[str, dict[str, float]]:
    """BA and per-class recalls with intervals: Jeffreys per recall, MOVER for BA (see the module docstring).

    Returns {"balanced_accuracy" | "recall/<class>": {"estimate", "low", "high", "bootstrap_low",
    "bootstrap_high"}}, the bootstrap bounds from a class-stratified percentile bootstrap. `clusters` (one id per
    row) marks rows of the same sample, e.g. one sample's predictions from several seeds: the bootstrap draws
    them together and Jeffreys counts them by their effective number of trials.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    recalls = _class_recalls(labels, preds)
    boot = _bootstrap_recalls(labels, (preds == labels)[:, None], clusters, n_boot, _rngs(seed)[0])[:, 0]
    low, high = _percentiles(boot, confidence)
    bounds = [_jeffreys_recall(labels, preds == labels, clusters, k, confidence) for k in LABELS]
    ba = recalls.mean()
    ba_low = max(0.0, ba - np.sqrt(sum((r - lo) ** 2 for r, (lo, _) in zip(recalls, bounds))) / len(LABELS))
    ba_high = min(1.0, ba + np.sqrt(sum((hi - r) ** 2 for r, (_, hi) in zip(recalls, bounds))) / len(LABELS))
    ba_boot = _percentiles(boot.mean(1), confidence)
    out = {"balanced_accuracy": _interval(ba, ba_low, ba_high) | _boot_bounds(*ba_boot)}
    for k, name in enumerate(CLASS_KEYS):
        out[f"recall/{name}"] = _interval(recalls[k], *bounds[k]) | _boot_bounds(low[k], high[k])
    return out


def jeffreys_interval(successes: float, trials: float, confidence: float = 0.95) -> tuple[float, float]:
    """Jeffreys interval of a binomial proportion (Beta(x + 1/2, n - x + 1/2) quantiles; 0 at x = 0, 1 at x = n).

    Non-integer x and n (effective counts) are allowed; no trials gives (0, 0), the recall of an absent class.
    """
    if trials <= 0:
        return 0.0, 0.0
    tail = (1 - confidence) / 2
    low = 0.0 if successes <= 0 else float(beta.ppf(tail, successes + 0.5, trials - successes + 0.5))
    high = 1.0 if successes >= trials else float(beta.ppf(1 - tail, successes + 0.5, trials - successes + 0.5))
    return low, high


def _jeffreys_recall(labels: np.ndarray, correct: np.ndarray, clusters, k: int,
                     confidence: float) -> tuple[float, float]:
    """Jeffreys interval of class k's recall; pooled seeds count by their effective number of trials."""
    in_class = labels == k
    rows = int(in_class.sum())
    if not rows:
        return 0.0, 0.0
    hits = correct[in_class].astype(float)
    p = hits.mean()
    if clusters is None:
        return jeffreys_interval(hits.sum(), rows, confidence)
    _, unit = np.unique(np.asarray(clusters)[in_class], return_inverse=True)
    unit_hits, unit_rows = np.bincount(unit, weights=hits), np.bincount(unit)
    n_units = len(unit_rows)
    # the ratio estimator's variance of the pooled recall over samples; identical seeds give p(1-p)/n_units
    var = ((unit_hits - p * unit_rows) ** 2).sum() / rows ** 2
    if p in (0.0, 1.0):
        n_eff = float(n_units)  # every row alike: the seeds agree, as many trials as samples
    elif var == 0:
        n_eff = float(rows)  # every sample the same share right: the pooled recall does not move with them
    else:
        n_eff = float(np.clip(p * (1 - p) / var, n_units, rows))
    return jeffreys_interval(p * n_eff, n_eff, confidence)


def paired_difference(labels, preds_a, preds_b, n_boot: int = 2000, n_perm: int = 5000, seed: int = 0,
                      confidence: float = 0.95, clusters=None) -> dict[str, float]:
    """BA(b) - BA(a): paired class-stratified bootstrap interval and paired permutation p-value (two-sided).

    Returns {"ba_a", "ba_b", "difference", "low", "high", "p_value", "n_samples", "n_discordant",
    "n_discordant_units"}. The permutation test swaps a's and b's predictions with probability 1/2 (H0: the runs
    are exchangeable), via scipy's `permutation_test(permutation_type="samples")`; with `clusters` (one sample's
    rows from several seeds) it swaps all of a cluster's rows together, as the bootstrap draws them, so pooled
    seeds are not taken for independent samples. n_discordant counts rows, n_discordant_units the rows or
    clusters whose swap changes the statistic. n_perm=5000 puts the smallest reachable p near 4e-4, small
    enough to survive Holm over a handful of variants; with at most log2(n_perm) discordant units scipy
    enumerates every swap and the p-value is exact.
    """
    labels, preds_a, preds_b = np.asarray(labels), np.asarray(preds_a), np.asarray(preds_b)
    correct_a, correct_b = preds_a == labels, preds_b == labels
    boot_rng, perm_rng = _rngs(seed)
    boot = _bootstrap_recalls(labels, np.column_stack([correct_a, correct_b]), clusters, n_boot, boot_rng)
    ba_a, ba_b = _class_recalls(labels, preds_a).mean(), _class_recalls(labels, preds_b).mean()
    low, high = _percentiles(boot[:, 1].mean(1) - boot[:, 0].mean(1), confidence)
    p_value, units = _permutation_p_value(labels, correct_a, correct_b, n_perm, perm_rng, clusters)
    return {"ba_a": float(ba_a), "ba_b": float(ba_b), "difference": float(ba_b - ba_a),
            "low": float(low), "high": float(high), "p_value": p_value,
            "n_samples": int(len(labels)), "n_discordant": int((correct_a != correct_b).sum()),
            "n_discordant_units": units}


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order: monotone in the raw p, capped at 1."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    # the i-th smallest p is multiplied by (m - i); the running max keeps the adjusted p's in order
    scaled = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted.tolist()




def model_verdict(name_a: str, name_b: str, difference: float, significant: bool, runs: int = 1) -> str:
    """The model-level verdict in words: a statement about these trained models, never about the versions."""
    models = "these two trained models" if runs == 1 else f"these trained models ({runs} runs each)"
    words = f"{models} do not differ beyond sample noise"
    if significant:
        words = (f"{models} differ beyond sample noise ({name_b} {'higher' if difference > 0 else 'lower'} by "
                 f"{100 * abs(difference):.1f} BA points)")
    tail = (f"training variance not measured (run --seeds {SEEDS_TO_RUN})" if runs == 1 else
            "whether the versions differ is the version-level verdict")
    return f"{name_b} vs {name_a}: {words}; {tail}"


def verdict(diff: dict, adjusted_p: float, name_a: str, name_b: str, alpha: float = 0.05, runs: int = 1) -> str:
    """Plain words: the models differ only when the adjusted p and the interval agree."""
    significant = adjusted_p < alpha and (diff["low"] > 0 or diff["high"] < 0)
    return model_verdict(name_a, name_b, diff["difference"], significant, runs)


def pooled(runs_a: pd.DataFrame, runs_b: pd.DataFrame, n_boot: int = 2000, n_perm: int = 5000,
           seed: int = 0, confidence: float = 0.95) -> dict:
    """Several runs per variant (seeds, folds): BA mean and spread across runs, statistics on the pooled rows.

    Each frame holds one row per (run, sample): columns fold, seed, study_id, level, label, pred.
    Each variant pools all its runs; the difference pairs only rows whose (fold, seed, study_id, level)
    exist in both, so with unequal run counts the extra runs count for their variant but not for the
    difference. Bootstraps resample samples (fold, study_id, level), carrying all runs' rows of a sample
    together, and the permutation test swaps a sample's rows together: several seeds on one fold are not more
    validation data. These are model-level figures; `harness.compare.versions` asks the version-level question.
    Returns {"a": summary, "b": summary, "difference": paired_difference dict or None, "n_paired_runs"},
    summary = {"n_runs", "run_ba", "mean_ba", "std_ba", "intervals"}; std_ba is NaN for a single run.
    """
    for frame in (runs_a, runs_b):
        if frame.duplicated(RUN_KEY + SAMPLE_KEY).any():
            raise ValueError("two rows for one (fold, seed, study_id, level): runs must differ in fold or seed")
    pairs = runs_a.merge(runs_b, on=RUN_KEY + SAMPLE_KEY, suffixes=("_a", "_b"))
    if (pairs["label_a"] != pairs["label_b"]).any():
        raise ValueError("the two variants disagree on the labels of shared validation samples")
    difference = None
    if len(pairs):
        difference = paired_difference(pairs["label_a"], pairs["pred_a"], pairs["pred_b"], n_boot, n_perm, seed,
                                       confidence, clusters=_sample_ids(pairs))
    return {"a": _variant_summary(runs_a, n_boot, seed, confidence),
            "b": _variant_summary(runs_b, n_boot, seed, confidence),
            "difference": difference, "n_paired_runs": int(len(pairs[RUN_KEY].drop_duplicates()))}


def _variant_summary(runs: pd.DataFrame, n_boot: int, seed: int, confidence: float) -> dict:
    """One variant's runs: BA per run, its mean and sample SD, intervals on the pooled rows."""
    run_ba = [float(_class_recalls(r["label"].to_numpy(), r["pred"].to_numpy()).mean())
              for _, r in runs.groupby(RUN_KEY, sort=True)]
    return {"n_runs": len(run_ba), "run_ba": run_ba, "mean_ba": float(np.mean(run_ba)),
            "std_ba": float(np.std(run_ba, ddof=1)) if len(run_ba) > 1 else float("nan"),
            "intervals": recall_intervals(runs["label"], runs["pred"], n_boot, seed, confidence,
                                          clusters=_sample_ids(runs))}


def _class_recalls(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """The three recalls as harness.metrics.classification computes them (absent class: 0)."""
    return recall_score(labels, preds, labels=LABELS, average=None, zero_division=0)


def _bootstrap_recalls(labels: np.ndarray, correct: np.ndarray, clusters, n_boot: int,
                       rng: np.random.Generator) -> np.ndarray:
    """(n_boot, runs, 3) recalls, resampling samples with replacement within each true class (sizes kept).

    `correct` is (rows, runs) bool; rows sharing a cluster id are one sample and are drawn together.
    """
    clusters = np.arange(len(labels)) if clusters is None else np.asarray(clusters)
    unit_ids, unit_of_row = np.unique(clusters, return_inverse=True)
    hits = np.zeros((len(unit_ids), correct.shape[1]))
    np.add.at(hits, unit_of_row, correct)
    trials = np.bincount(unit_of_row, minlength=len(unit_ids))
    unit_label = np.empty(len(unit_ids), dtype=labels.dtype)
    unit_label[unit_of_row] = labels
    recalls = np.zeros((n_boot, correct.shape[1], len(LABELS)))
    for k in LABELS:
        in_class = unit_label == k
        if not in_class.any():
            continue  # absent class: recall 0 in every replicate, as harness.metrics.classification counts it
        # A replicate's recalls depend only on how often each distinct (hits, trials) pattern is drawn, so one
        # multinomial draw over the patterns is the same bootstrap as an (n_boot, class size) index matrix,
        # in memory independent of the class size.
        patterns, counts = np.unique(np.column_stack([hits[in_class], trials[in_class]]), axis=0,
                                     return_counts=True)
        draws = rng.multinomial(in_class.sum(), counts / counts.sum(), size=n_boot)
        recalls[:, :, k] = (draws @ patterns[:, :-1]) / (draws @ patterns[:, -1])[:, None]
    return recalls


def _permutation_p_value(labels: np.ndarray, correct_a: np.ndarray, correct_b: np.ndarray, n_perm: int,
                         rng: np.random.Generator, clusters=None) -> tuple[float, int]:
    """Two-sided paired permutation p-value of BA(b) - BA(a), swapping a and b per row or per cluster.

    Returns (p, the number of rows or clusters whose swap changes the statistic).
    """
    # BA = sum over correct rows of 1 / (3 x its class size); a swap only matters where it changes b - a,
    # so the test runs on those rows (or clusters) alone: same statistic, same null, exact when they are few
    weight = 1.0 / (len(LABELS) * np.bincount(labels, minlength=len(LABELS))[labels])
    a, b = weight * correct_a, weight * correct_b
    if clusters is not None:
        _, unit = np.unique(np.asarray(clusters), return_inverse=True)
        a, b = np.bincount(unit, weights=a), np.bincount(unit, weights=b)
        discordant = ~np.isclose(a, b, rtol=0, atol=1e-15)  # one weight is at least 1 / (3 x rows), far above
    else:
        discordant = correct_a != correct_b
    units = int(discordant.sum())
    if units < 2:
        return 1.0, units  # the null is {0} or {+d, -d}: the observed value is as extreme as any (scipy needs 2)
    result = permutation_test((a[discordant], b[discordant]), lambda a, b, axis: np.sum(b - a, axis=axis),
                              permutation_type="samples", vectorized=True, n_resamples=n_perm,
                              batch=PERMUTATION_BATCH, rng=rng)
    return float(result.pvalue), units


def _sample_ids(frame: pd.DataFrame) -> np.ndarray:
    """One integer per validation sample (fold, study_id, level)."""
    return frame.groupby(SAMPLE_KEY, sort=False).ngroup().to_numpy()


def _rngs(seed: int) -> list[np.random.Generator]:
    """Independent streams for the bootstrap and the permutation test: changing n_boot leaves the p-value."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)]


def _percentiles(replicates: np.ndarray, confidence: float) -> np.ndarray:
    return np.quantile(replicates, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0)


def _interval(estimate: float, low: float, high: float) -> dict[str, float]:
    return {"estimate": float(estimate), "low": float(low), "high": float(high)}


def _boot_bounds(low: float, high: float) -> dict[str, float]:
    return {"bootstrap_low": float(low), "bootstrap_high": float(high)}
