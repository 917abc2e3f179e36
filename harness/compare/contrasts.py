"""Version-level tests of a contrast of several arms: Σ_j w_j BA(arm_j), paired by (fold, seed).

`harness ablate` asks more than "b - a": a factor's leave-one-in effect is BA(A+f) - BA(A), its leave-one-out
effect BA(B) - BA(B-f), the gap between the two (an interaction) is a contrast of four arms, and an exact
Shapley value is a weighted sum over 2^k mixes. BA is linear in who was right on each sample, so every one of
them is the same question as `compare`'s: the corrected hierarchical bootstrap (harness.compare.versions has
its calibration) on the per-sample contrast Σ_j w_j correct_j, every arm's cells resampled together (the
arms' errors on a fold's samples stay paired). With weights (-1, +1) it is exactly `compare_versions`' test.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from harness.compare.planning import mdd_at
from harness.compare.version_cells import TRAIN_TEST_RATIO, Cells, Fold, by_fold, check_labels, difference_parts
from harness.compare.version_tests import run_tests


def contrast_folds(arms: Mapping[str, Cells], weights: Mapping[str, float]) -> list[Fold]:
    """The (fold, seed) cells every arm with a weight has, fold by fold, with the contrast's weights."""
    names = [n for n, w in weights.items() if w != 0]
    cells = {n: by_fold(arms[n]) for n in names}
    folds = []
    for fold in sorted(set.intersection(*(set(c) for c in cells.values()))):
        seeds = sorted(set.intersection(*(set(c[fold]) for c in cells.values())), key=str)
        if not seeds:
            continue
        labels = cells[names[0]][fold][seeds[0]][0]
        for n in names:
            check_labels(fold, cells[n][fold], labels)
        correct = np.stack([np.stack([cells[n][fold][s][1] == labels for s in seeds]) for n in names])
        folds.append(Fold(fold, seeds, labels.astype(np.int64), correct, np.array([weights[n] for n in names], float)))
    return folds


def contrast(arms: Mapping[str, Cells], weights: Mapping[str, float], *, n_boot: int = 2000, seed: int = 0,
             confidence: float = 0.95, alpha: float = 0.05, power: float = 0.8) -> dict:
    """The contrast's estimate and its version-level interval over the cells all weighted arms share.

    Returns {"estimate" (mean over cells of Σ w_j BA_j), "low", "high", "p_value", "se", "df", "level" ("model":
    one cell; "version": several), "n_cells", "n_folds", "seeds_per_fold", "cells", "mdd" (at `power`),
    "significant" (p < alpha and the interval excludes 0), "alpha", "confidence", "weights"}.
    Raises ValueError when the arms share no cell.
    """
    folds = contrast_folds(arms, weights)
    if not folds:
        raise ValueError(f"the arms {', '.join(n for n, w in weights.items() if w)} share no (fold, seed) cell")
    parts = difference_parts(folds)
    main = run_tests(folds, parts, TRAIN_TEST_RATIO, n_boot, seed, confidence)["hierarchical_bootstrap"]
    level = "model" if len(folds) == 1 and len(folds[0].seeds) == 1 else "version"
    variance = parts.cell_var.mean() if level == "model" else main["se"] ** 2
    df = float("inf") if level == "model" else main["df"]
    significant = bool(main["p_value"] < alpha and (main["low"] > 0 or main["high"] < 0))
    return {"estimate": main["difference"], **{k: main[k] for k in ("low", "high", "p_value", "se", "df")},
            "level": level, "n_cells": int(parts.sizes.sum()), "n_folds": len(folds),
            "seeds_per_fold": parts.sizes.tolist(), "cells": [[f.fold, s] for f in folds for s in f.seeds],
            "mdd": mdd_at(variance, df, alpha, power), "significant": significant, "alpha": alpha,
            "confidence": confidence, "weights": {n: float(w) for n, w in weights.items() if w}}
