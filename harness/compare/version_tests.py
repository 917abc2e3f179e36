"""The version-level tests on paired cells (harness.compare.versions has why the primary is the primary):
the corrected hierarchical bootstrap, Nadeau-Bengio's corrected resampled t-test and P(better); one cell is tested
as two trained models (sign flips, Newcombe's paired intervals by MOVER)."""
from __future__ import annotations

import numpy as np
from scipy import stats as sps

from harness.compare.version_cells import (
    N_CLASSES,
    TRAIN_TEST_RATIO,
    Cells,
    Fold,
    Parts,
    difference_parts,
    prepare_folds,
    primary_df,
    sample_weights,
)


def _resampled_ba(fold: Fold, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, 2, S) BA of every paired cell, the fold's samples resampled within class (one draw for all cells).

    A replicate's recalls depend only on how often each distinct pattern of right/wrong over the 2S cells is
    drawn, so one multinomial draw over the patterns replaces an (n_boot, class size) index matrix.
    """
    cells = fold.correct.reshape(-1, fold.correct.shape[-1])  # (2S, n)
    small = len(cells) <= 62  # up to 31 seeds a sample's pattern packs into one int64
    codes = (cells.T.astype(np.int64) << np.arange(len(cells))).sum(1) if small else None
    out = np.zeros((n_boot, len(cells)))
    for k in range(N_CLASSES):
        in_class = fold.labels == k
        if not in_class.any():
            continue
        if small:
            patterns, counts = np.unique(codes[in_class], return_counts=True)
            bits = (patterns[:, None] >> np.arange(len(cells))) & 1  # (P, 2S)
        else:
            bits, counts = np.unique(cells.T[in_class].astype(np.int64), axis=0, return_counts=True)
        draws = rng.multinomial(in_class.sum(), counts / counts.sum(), size=n_boot)
        out += (draws @ bits) / (N_CLASSES * in_class.sum())
    return out.reshape(n_boot, *fold.correct.shape[:2])


def _p_beats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(a cell of b scores above a cell of a) over all pairs along the last axis, ties counted 1/2."""
    gt = (b[..., :, None] > a[..., None, :]).mean((-1, -2))
    eq = (b[..., :, None] == a[..., None, :]).mean((-1, -2))
    return gt + eq / 2


def _bootstrap(folds: list[Fold], parts: Parts, n_boot: int, rng: np.random.Generator) -> dict:
    """Hierarchical bootstrap replicates of the mean difference over cells (cells weighted equally).

    Per fold: resample the paired seeds with replacement, then the samples within class (one draw for every
    cell of the fold and both variants); folds are strata. "plain": that scheme as it stands (the audit's).
    "corrected": the fold's mean difference, plus the resampled seeds' residuals x sqrt(S/(S-1)), plus the
    seed-averaged difference on the resampled samples shrunk to the shared sample noise, x sqrt(shared /
    (shared + specific/S)). "better": P(b beats a) on the plain replicates.
    """
    total = sum(len(f.seeds) for f in folds)
    plain, corrected, better = np.zeros(n_boot), np.zeros(n_boot), np.zeros(n_boot)
    for f, shared, averaged in zip(folds, parts.shared, parts.averaged):
        ba = _resampled_ba(f, n_boot, rng)
        n_seeds = len(f.seeds)
        weight = n_seeds / total
        idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        diff = f.contrast(ba, 1)
        observed = f.contrast(f.ba, 0)
        plain += np.take_along_axis(diff, idx, 1).mean(1) * weight
        shrink = np.sqrt(shared / averaged) if averaged > 0 else 0.0
        corrected += (observed.mean() + shrink * (diff.mean(1) - observed.mean())) * weight
        if n_seeds > 1:
            residual = observed - observed.mean()
            corrected += np.sqrt(n_seeds / (n_seeds - 1)) * residual[idx].mean(1) * weight
        if f.pairwise:
            a, b = np.take_along_axis(ba[:, 0], idx, 1), np.take_along_axis(ba[:, 1], idx, 1)
            better += _p_beats(a, b) * weight
    return {"plain": plain, "corrected": corrected, "better": better}


def _bootstrap_p(replicates: np.ndarray, null: float) -> float:
    """Two-sided bootstrap p-value: twice the smaller share of replicates on either side of the null (+1 rule)."""
    below, above = (replicates <= null).sum(), (replicates >= null).sum()
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(replicates) + 1)))


def _percentiles(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    low, high = np.quantile(replicates, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def _sign_flip_p(fold: Fold, n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided paired permutation p of one cell's BA difference: each discordant sample's a and b swapped
    with probability 1/2 (every swap enumerated when there are at most 12, else n_perm random ones, +1 rule).

    The model-level test: with 6 Severe samples the bootstrap misses the discordance the fold did not happen
    to show, and its percentile p rejects 10.7% of true nulls (benchmarks/calibration.md).
    """
    signed = (fold.correct[1, 0].astype(float) - fold.correct[0, 0]) * sample_weights(fold.labels)
    signed = signed[signed != 0]
    observed, x = abs(float(signed.sum())), np.abs(signed)
    if len(x) < 2:
        return 1.0
    tol = 1e-12 * x.sum()
    if len(x) <= 12:
        signs = 1 - 2 * ((np.arange(2 ** len(x))[:, None] >> np.arange(len(x))) & 1)
        return float((np.abs(signs @ x) >= observed - tol).mean())
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_perm, len(x)))
    return float(((np.abs(signs @ x) >= observed - tol).sum() + 1) / (n_perm + 1))


def _wilson(successes: float, n: float, z: float) -> tuple[float, float]:
    p, denom = successes / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / denom, z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def _paired_recall_difference(right_a: np.ndarray, right_b: np.ndarray, z: float) -> tuple[float, float, float]:
    """Newcombe's hybrid score interval for a difference of paired proportions (his method 10): recall_b -
    recall_a on one class's samples, from the two Wilson intervals and the correlation of the pairs."""
    n = len(right_a)
    both, only_b = float((right_a & right_b).sum()), float((right_b & ~right_a).sum())
    only_a, neither = float((right_a & ~right_b).sum()), float((~right_a & ~right_b).sum())
    pa, pb = (both + only_a) / n, (both + only_b) / n
    (la, ua), (lb, ub) = _wilson(both + only_a, n, z), _wilson(both + only_b, n, z)
    cross = both * neither - only_a * only_b
    cross = max(cross - n / 2, 0.0) if cross > 0 else cross  # Newcombe's continuity step on the phi numerator
    margins = (both + only_a) * (neither + only_b) * (both + only_b) * (neither + only_a)
    phi = cross / np.sqrt(margins) if margins > 0 else 0.0
    d = pb - pa
    low = d - np.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    high = d + np.sqrt(max(0.0, (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2))
    return d, low, high


def _model_interval(fold: Fold, confidence: float) -> tuple[float, float]:
    """One cell's BA difference: Newcombe's paired interval per class, combined by MOVER (as stats.py does for
    one model's BA). Holds its coverage on 6 Severe samples, where the percentile bootstrap of the paired
    difference covers 89% (benchmarks/calibration.md)."""
    z = sps.norm.ppf((1 + confidence) / 2)
    parts = [_paired_recall_difference(fold.correct[0, 0][fold.labels == k], fold.correct[1, 0][fold.labels == k], z)
             for k in range(N_CLASSES) if (fold.labels == k).any()]
    d = sum(p[0] for p in parts) / N_CLASSES
    low = d - np.sqrt(sum((p[0] - p[1]) ** 2 for p in parts)) / N_CLASSES
    high = d + np.sqrt(sum((p[2] - p[0]) ** 2 for p in parts)) / N_CLASSES
    return float(low), float(high)


def _t_test(estimate: float, se: float, df: float, confidence: float) -> dict:
    """Interval estimate ± t_df se and the two-sided p of estimate / se against t_df."""
    if not se > 0:  # no spread at all: identical cells, or every cell the same difference
        same = estimate == 0
        return {"low": estimate, "high": estimate, "p_value": 1.0 if same else 0.0}
    q = sps.t.ppf((1 + confidence) / 2, df)
    return {"low": float(estimate - q * se), "high": float(estimate + q * se),
            "p_value": float(2 * sps.t.sf(abs(estimate) / se, df))}


def nadeau_bengio(differences, train_test_ratio: float = TRAIN_TEST_RATIO, confidence: float = 0.95) -> dict:
    """Nadeau-Bengio corrected resampled t-test over cell differences (H0: mean difference 0).

    The variance of the mean of J cell differences is taken as (1/J + n_test/n_train) s² instead of s²/J: the
    cells' training sets overlap, so their differences are correlated. t with J - 1 degrees of freedom.
    Returns {"method", "difference", "low", "high", "p_value", "se", "df", "n_cells"}; NaN with fewer than 2 cells.
    """
    d = np.asarray(differences, dtype=float)
    out = {"method": "nadeau_bengio", "difference": float(d.mean()) if len(d) else float("nan"),
           "n_cells": int(len(d)), "df": max(int(len(d)) - 1, 0)}
    if len(d) < 2:
        return out | {"low": float("nan"), "high": float("nan"), "p_value": float("nan"), "se": float("nan")}
    se = float(np.sqrt((1 / len(d) + 1 / train_test_ratio) * d.var(ddof=1)))
    return out | {"se": se, **_t_test(float(d.mean()), se, len(d) - 1, confidence)}


def run_tests(folds: list[Fold], parts: Parts, train_test_ratio: float, n_boot: int, seed: int,
           confidence: float) -> dict:
    """The three version-level tests on the paired cells, from one set of hierarchical bootstrap replicates."""
    ba = [f.ba for f in folds]
    d = np.concatenate([f.contrast(b, 0) for f, b in zip(folds, ba)])
    mean = float(d.mean())
    rng = np.random.default_rng(seed)
    boot = _bootstrap(folds, parts, n_boot, rng)
    # not in the replicates: the fold part, and the seed spread of one-seed folds when other folds measured it
    w2 = (parts.sizes / parts.sizes.sum()) ** 2
    extra = float((w2 * (parts.sizes == 1)).sum() * parts.seed_var) if parts.seed_dof else 0.0
    extra += float(w2.sum() * np.nan_to_num(parts.fold_var))
    df = primary_df(parts)
    se = float(np.sqrt(boot["corrected"].var(ddof=1) + extra)) if n_boot > 1 else float("nan")
    plain_low, plain_high = _percentiles(boot["plain"], confidence)
    hierarchical = {"method": "hierarchical_bootstrap", "difference": mean, "se": se, "df": df,
                    **_t_test(mean, se, df, confidence), "n_boot": n_boot,
                    "percentile_low": plain_low, "percentile_high": plain_high,
                    "percentile_p_value": _bootstrap_p(boot["plain"], 0.0)}
    # one cell of two variants: two trained models, tested as such (sign flips; Newcombe's paired intervals)
    if len(d) == 1 and folds[0].pairwise:
        low, high = _model_interval(folds[0], confidence)
        hierarchical |= {"low": low, "high": high, "p_value": _sign_flip_p(folds[0], n_boot, rng),
                         "p_method": "sign-flip permutation", "interval_method": "newcombe-mover"}
    if all(f.pairwise for f in folds):
        p_hat = float(sum(_p_beats(b[0], b[1]) * b.shape[1] for b in ba) / len(d))
        better = {"method": "p_better", "estimate": p_hat, "difference": mean,
                  **dict(zip(("low", "high"), _percentiles(boot["better"], confidence))),
                  "p_value": _bootstrap_p(boot["better"], 0.5), "n_boot": n_boot}
    else:  # a contrast of several arms has no "a cell of b beats a cell of a"
        better = {"method": "p_better", "estimate": float("nan"), "difference": mean, "low": float("nan"),
                  "high": float("nan"), "p_value": float("nan"), "n_boot": 0}
    return {"hierarchical_bootstrap": hierarchical, "nadeau_bengio": nadeau_bengio(d, train_test_ratio, confidence),
            "p_better": better}


def paired_difference(cells_a: Cells, cells_b: Cells) -> dict:
    """The paired mean BA difference over the cells both variants have, paired by (fold, seed).

    Returns {"difference" (mean over cells of BA(b) - BA(a)), "ba_a", "ba_b" (means over the same cells),
    "cells" ([fold, seed] pairs), "cell_differences"}; every cell weighs the same.
    """
    folds = prepare_folds(cells_a, cells_b)
    if not folds:
        raise ValueError("no (fold, seed) cell in common: nothing to pair")
    ba = [f.ba for f in folds]
    d = np.concatenate([b[1] - b[0] for b in ba])
    return {"difference": float(d.mean()), "ba_a": float(np.concatenate([b[0] for b in ba]).mean()),
            "ba_b": float(np.concatenate([b[1] for b in ba]).mean()),
            "cells": [[f.fold, s] for f in folds for s in f.seeds], "cell_differences": d.tolist()}


def _method(name: str, cells_a: Cells, cells_b: Cells, n_boot: int, seed: int, confidence: float) -> dict:
    folds = prepare_folds(cells_a, cells_b)
    if not folds:
        raise ValueError("no (fold, seed) cell in common: nothing to pair")
    return run_tests(folds, difference_parts(folds), TRAIN_TEST_RATIO, n_boot, seed, confidence)[name]


def hierarchical_bootstrap(cells_a: Cells, cells_b: Cells, n_boot: int = 2000, seed: int = 0,
                           confidence: float = 0.95) -> dict:
    """The primary test alone (see the module docstring). Returns {"method", "difference", "low", "high",
    "p_value", "se", "df", "n_boot", "percentile_low", "percentile_high", "percentile_p_value"} (+ "p_method"
    for one cell, tested by sign flips)."""
    return _method("hierarchical_bootstrap", cells_a, cells_b, n_boot, seed, confidence)


def p_better(cells_a: Cells, cells_b: Cells, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """P(a cell of b beats a cell of a on the same fold), ties 1/2, with the plain hierarchical bootstrap's
    percentile interval and p-value against 1/2. Returns {"method", "estimate", "difference", "low", "high",
    "p_value", "n_boot"}."""
    return _method("p_better", cells_a, cells_b, n_boot, seed, confidence)
