"""Version-level statistics of `harness compare`: is v9 a better *recipe* than v4, seeds and folds included?

`harness.compare.stats` asks whether two trained models differ on one fold's validation samples. A recipe
is more than one model: a fresh seed or another fold's training set moves BA by points, so the question
needs cells, one trained model per (fold, seed) and variant, and a test whose noise includes the seeds'.
Input: per variant {(fold, seed): (labels, argmax predictions)}; a fold's validation samples are the same for
both variants and every seed, in the same order. BA is the plain mean of the three recalls, as in
`harness.metrics.classification` (an absent class counts 0). Everything here is numpy/scipy.

The three tests (`compare_versions(...)["tests"]`; every result names its `method`):

- `hierarchical_bootstrap`: within each fold, resample the seeds (paired cells) with replacement, then the
  samples within class (one draw for every cell of the fold and both variants, so correlated errors stay
  paired); folds are strata. As it stands ("plain", kept as `percentile_low/high/p_value`), the scheme has two
  biases: S resampled seeds have (S-1)/S of their variance, and the seed-specific sample noise (which samples a
  model gets right by chance) is counted twice, once in the seeds' spread and again in the resampled samples.
  The primary form corrects both: seed residuals scaled by sqrt(S/(S-1)), and the sample stage shrunk to the
  noise the fold's seeds share. Its SE then estimates Var = Σ_f w_f² (s²/S_f + shared_f) + fold part (w_f =
  S_f / cells), and the interval and p-value use t with Satterthwaite degrees of freedom from the seeds
  (Σ (S_f - 1)) and the fold means (K - 1): with 3 seeds on one fold, the spread of 3 values is all there is.
- `nadeau_bengio`: the corrected resampled t-test over cell differences, variance (1/J + n_test/n_train) s²
  (Nadeau & Bengio 2003; scikit-learn's "statistical comparison of models" example), t with J - 1 df.
- `p_better`: P(a cell of b beats a cell of a), all pairs within a fold, with the plain hierarchical
  bootstrap's percentile interval; significant when the interval excludes 1/2 (Bouthillier et al. 2021).

Why the corrected hierarchical bootstrap is the primary (`PRIMARY`), from benchmarks/calibration.md
(2,000 replications per scenario; real fold counts 1733/147/94, correlated errors, a seed-to-seed shift of
3 recall points per class: the audit's null of issue 17). It is the only one of the three that is both
calibrated and powerful. Its false-positive rate stays at or below 5% within Monte Carlo error (bound 6.2%)
on every version-level null there, 1.8-5.2% (1 or 5 folds; 1, 2, 3 or 5 seeds; seed shifts of 1.5 to 8
points; the demo's 101/8/6; a 2-point version x fold effect), and at 5 folds x 3 seeds it detects a true
3.3-point difference 84% of the time. The plain scheme reaches 12-19% false positives when seed noise
dominates (8 points, 2 or 3 seeds), P(better) 16% (2 seeds). Nadeau-Bengio holds its level everywhere
(0-4%) but detects 3.3 points 24% of the time: the simulation gives the cells' training sets no shared
effect, so its variance inflation by 1 + J n_test/n_train is pure cost here (with such an effect it would be
earning it; the fold means show one only as far as it differs between folds). P(better) detects 69%.
Today's pooled model-level test, read as a version claim, says "better" on 13-16% of these nulls.
One cell (one fold, one seed) is a test of two trained models, and its verdict says so: sign-flip
permutation p (exact for exchangeable models: 4.2% real, 4.6% demo, where the bootstrap's percentile p
rejects 10.7%) and Newcombe's paired interval per class combined by MOVER (covers 96% on the demo, where
the percentile bootstrap of the difference covers 89%). On the seed-noise null one cell says "differ" 15%
of the time, as any test that sees one model per variant must.

Planning (`plan`, before anything trains; `compare_versions(...)["plan"]` after): the minimum detectable
difference (MDD) at 80% power and alpha 0.05 from the same variance formula, and the seeds (per fold, for
these folds and for 5) that would resolve a difference. Verdicts follow what was measured (`verdict`): one
cell is a statement about two trained models, never about versions.
"""
from __future__ import annotations

import numpy as np

from harness.compare.planning import mdd_at, plan, plan_lines, plan_rows  # noqa: F401 (the public API)
from harness.compare.stats import model_verdict
from harness.compare.version_cells import (  # noqa: F401
    ALL_FOLDS,
    DEMO_FOLD_COUNTS,
    METHODS,
    PRIMARY,
    REAL_FOLD_COUNTS,
    SEEDS_TO_RUN,
    TRAIN_TEST_RATIO,
    Cells,
    balanced_accuracy,
    budget,
    cells_from_frame,
    difference_parts,
    prepare_folds,
    variance_budget,
)
from harness.compare.version_tests import hierarchical_bootstrap, nadeau_bengio, p_better, paired_difference, run_tests  # noqa: F401


def compare_versions(cells_a: Cells, cells_b: Cells, name_a: str = "a", name_b: str = "b", *,
                     train_test_ratio: float = TRAIN_TEST_RATIO, n_boot: int = 2000, seed: int = 0,
                     confidence: float = 0.95, alpha: float = 0.05, power: float = 0.8, max_seeds: int = 50,
                     primary: str = PRIMARY) -> dict:
    """b against a over the (fold, seed) cells both have, paired by (fold, seed).

    Returns {"method" (the primary's name), "level" ("model": one cell; "version": several), "name_a",
    "name_b", "cells" ([fold, seed] pairs), "n_cells", "n_folds", "seeds_per_fold", "ba_a", "ba_b" (means
    over the paired cells), "difference", "low", "high", "p_value", "se", "df" (the primary's), "tests" ({method:
    result} for all three), "variance" ({"a", "b": `variance_budget` of all of a variant's cells, "difference":
    the same for the paired cell differences}), "mdd" (the primary's at `power`), "plan" ({"table",
    "seeds_needed"} from the observed components), "alpha", "confidence", "verdict"}.
    Raises ValueError when no cell is paired or the samples disagree.
    """
    if primary not in METHODS:
        raise ValueError(f"primary must be one of {METHODS}, got {primary!r}")
    folds = prepare_folds(cells_a, cells_b)
    if not folds:
        raise ValueError("no (fold, seed) cell in common: nothing to pair")
    parts = difference_parts(folds)
    tests = run_tests(folds, parts, train_test_ratio, n_boot, seed, confidence)
    ba = [f.ba for f in folds]
    main = tests[primary]
    level = "model" if len(folds) == 1 and len(folds[0].seeds) == 1 else "version"
    if level == "model":
        mdd = mdd_at(parts.cell_var.mean(), float("inf"), alpha, power)
    elif primary == "nadeau_bengio":
        mdd = mdd_at(main["se"] ** 2, main["df"], alpha, power)
    else:
        mdd = mdd_at(tests["hierarchical_bootstrap"]["se"] ** 2, tests["hierarchical_bootstrap"]["df"], alpha, power)
    components = (parts.training_var, parts.specific_var if parts.seed_dof else float("nan"),
                  float(parts.shared.mean()), float(np.nan_to_num(parts.fold_var)))
    difference = float(np.concatenate([b[1] - b[0] for b in ba]).mean())
    result = {
        "method": primary, "level": level, "name_a": name_a, "name_b": name_b,
        "cells": [[f.fold, s] for f in folds for s in f.seeds], "n_cells": int(parts.sizes.sum()),
        "n_folds": len(folds), "seeds_per_fold": parts.sizes.tolist(),
        "ba_a": float(np.concatenate([b[0] for b in ba]).mean()),
        "ba_b": float(np.concatenate([b[1] for b in ba]).mean()),
        "difference": difference,
        **{k: main[k] for k in ("low", "high", "p_value")},
        "se": main.get("se", tests["hierarchical_bootstrap"]["se"]),
        "df": main.get("df", tests["hierarchical_bootstrap"]["df"]),
        "tests": tests,
        "variance": {"a": variance_budget(cells_a), "b": variance_budget(cells_b), "difference": budget(parts)},
        "mdd": mdd, "alpha": alpha, "confidence": confidence,
        "plan": plan_rows(components, sorted({len(folds), ALL_FOLDS}), difference, alpha, power, max_seeds),
    }
    result["verdict"] = verdict(result)
    return result


def verdict(result: dict, adjusted_p: float | None = None, alpha: float | None = None) -> str:
    """Words that follow what was measured: one cell speaks of two trained models, several of versions.

    Significant when the (adjusted) p < alpha and the interval excludes 0. The primary's p and interval, or
    P(better)'s interval about 1/2 when that is the primary.
    """
    a, b = result["name_a"], result["name_b"]
    p = result["p_value"] if adjusted_p is None else adjusted_p
    alpha = result["alpha"] if alpha is None else alpha
    null = 0.5 if result["method"] == "p_better" else 0.0
    up, down = result["low"] > null, result["high"] < null
    significant = p < alpha and (up or down)
    if result["level"] == "model":
        return model_verdict(a, b, result["difference"], significant)
    k, seeds = result["n_folds"], result["seeds_per_fold"]
    if k == 1:
        noise = f"seed and sample noise on fold {result['cells'][0][0]}"
    elif max(seeds) == 1:
        noise = "fold-to-fold (training) and sample noise, one seed per fold"
    else:
        noise = "seed, fold and sample noise"
    budget = f"{k} fold{'s' if k > 1 else ''} x {'/'.join(map(str, sorted(set(seeds))))} seed" \
        + ("s" if max(seeds) > 1 else "")
    if significant:
        return f"{b} scores {'higher' if up else 'lower'} than {a} beyond {noise} ({budget})"
    text = f"{a} and {b} are indistinguishable at this budget ({budget}): MDD {100 * result['mdd']:.1f} points"
    needed = [row for row in result.get("plan", {}).get("seeds_needed", []) if row["seeds"]]
    if needed and result["difference"]:
        row = needed[0]
        text += (f"; about {row['seeds']} seeds on {row['folds']} fold{'s' if row['folds'] > 1 else ''} would "
                 f"resolve the observed {100 * result['difference']:+.1f}")
    return text
