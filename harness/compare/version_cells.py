"""Version-level comparison, its input: paired (fold, seed) cells and their variance components.

A cell is one trained model per (fold, seed) and variant: {(fold, seed): (labels, argmax predictions)}, a fold's
validation samples the same for both variants and every seed, in the same order. The components split what moves a
cell's BA (or a paired BA difference) into seeds, folds and samples (harness.compare.versions says how they are used).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import numpy as np

N_CLASSES = 3  # Normal/Mild, Moderate, Severe
METHODS = ("hierarchical_bootstrap", "nadeau_bengio", "p_better")
PRIMARY = "hierarchical_bootstrap"
TRAIN_TEST_RATIO = 4.0  # 5-fold cross-validation: each cell trains on 4 folds and validates on 1
ALL_FOLDS = 5  # data.num_folds' default: the most folds a plan can add
DEMO_FOLD_COUNTS = (101, 8, 6)  # one demo validation fold, Normal/Mild, Moderate, Severe
REAL_FOLD_COUNTS = (1733, 147, 94)  # a fifth of the real spinal samples (8,664 / 736 / 470)
SEEDS_TO_RUN = 3  # what a verdict without training variance asks for

Cell = tuple[int, Hashable]  # (fold, seed)
Cells = Mapping[Cell, tuple[np.ndarray, np.ndarray]]  # (fold, seed) -> (labels, argmax predictions)



def balanced_accuracy(labels, preds) -> float:
    """BA as harness.metrics.classification computes it: the mean of the 3 recalls, an absent class counting 0."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    return float(ba_of(labels, preds == labels))


def cells_from_frame(frame) -> dict:
    """{(fold, seed): (labels, preds)} from a frame of one row per (run, sample): columns fold, seed, study_id,
    level, label, pred (what harness.compare.stats.pooled takes), samples sorted by (study_id, level)."""
    out = {}
    for (fold, seed), rows in frame.groupby(["fold", "seed"], sort=True):
        rows = rows.sort_values(["study_id", "level"])
        out[(int(fold), seed)] = (rows["label"].to_numpy(np.int64), rows["pred"].to_numpy(np.int64))
    return out


# ---------------------------------------------------------------------------------------------------------------
# cells


@dataclass
class Fold:
    """One fold's paired cells: the seeds both variants ran, and who was right on each validation sample."""

    fold: int
    seeds: list
    labels: np.ndarray  # (n,)
    correct: np.ndarray  # (m, S, n) bool: variant a, variant b (m = 2), or the m arms of a contrast
    weights: np.ndarray = field(default_factory=lambda: np.array([-1.0, 1.0]))
    """The contrast over the m arms: b - a by default; harness.compare.contrasts sets others."""

    @property
    def ba(self) -> np.ndarray:
        """(m, S) BA of every cell."""
        return ba_of(self.labels, self.correct)

    @property
    def pairwise(self) -> bool:
        """True for the plain b - a of two variants (the only case P(better) and the one-cell tests take)."""
        return len(self.weights) == 2 and self.weights[0] == -1 and self.weights[1] == 1

    def contrast(self, values: np.ndarray, axis: int) -> np.ndarray:
        """Σ_j weights_j values_j along the arm axis (b - a for two variants)."""
        return np.tensordot(self.weights, np.moveaxis(np.asarray(values, dtype=float), axis, 0), axes=1)


def ba_of(labels: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """BA over the last axis of `correct` (labels along it): the mean of the class recalls, absent class 0."""
    total = 0.0
    for k in range(N_CLASSES):
        in_class = labels == k
        if in_class.any():
            total = total + correct[..., in_class].mean(-1)
    return total / N_CLASSES


def sample_weights(labels: np.ndarray) -> np.ndarray:
    """Each sample's weight in BA: 1 / (3 x its class size)."""
    return 1.0 / (N_CLASSES * np.bincount(labels, minlength=N_CLASSES)[labels])


def by_fold(cells: Cells) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for (fold, seed), (labels, preds) in cells.items():
        out.setdefault(int(fold), {})[seed] = (np.asarray(labels), np.asarray(preds))
    return out


def check_labels(fold: int, runs: dict, labels: np.ndarray):
    for labels_s, preds in runs.values():
        if len(labels_s) != len(labels) or not np.array_equal(labels_s, labels) or len(preds) != len(labels):
            raise ValueError(f"fold {fold}: the cells disagree on the validation samples (labels or count)")


def prepare_folds(cells_a: Cells, cells_b: Cells) -> list[Fold]:
    """The paired cells, fold by fold (sorted), seeds in a stable order; checks that the samples agree."""
    a, b = by_fold(cells_a), by_fold(cells_b)
    folds = []
    for fold in sorted(set(a) & set(b)):
        seeds = sorted(set(a[fold]) & set(b[fold]), key=str)
        if not seeds:
            continue
        labels = a[fold][seeds[0]][0]
        check_labels(fold, a[fold], labels)
        check_labels(fold, b[fold], labels)
        correct = np.stack([np.stack([v[fold][s][1] == labels for s in seeds]) for v in (a, b)])
        folds.append(Fold(fold, seeds, labels.astype(np.int64), correct))
    return folds


# ---------------------------------------------------------------------------------------------------------------
# variance components


def _class_variance(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Sample variance of Σ_i w_i x_i (a BA for 0/1 rows, a BA difference for -1/0/1 rows) over the last axis:
    Σ_k var(x within class k) / (9 n_k), which is what a class-stratified bootstrap of the samples converges to."""
    total = np.zeros(scores.shape[:-1])
    for k in range(N_CLASSES):
        in_class = labels == k
        if in_class.any():
            total = total + scores[..., in_class].var(-1) / (N_CLASSES ** 2 * in_class.sum())
    return total


@dataclass
class Parts:
    """Variances of cell values v_fs = Σ_i w_i x_fsi (see `components`)."""

    values: list  # per fold: (S,) cell values
    sizes: np.ndarray  # seeds per fold
    cell_var: np.ndarray  # per cell: its class-stratified sample variance
    seed_var: float  # within-fold variance across seeds, pooled (ddof 1); NaN with one seed everywhere
    specific_var: float  # the part of a cell's sample variance that a fresh seed redraws (0 when unmeasured)
    averaged: np.ndarray  # per fold: sample variance of the seed-averaged row
    shared: np.ndarray  # per fold: the sample variance common to the fold's seeds
    fold_var: float  # between-fold variance beyond the within-fold part (0 when not positive; NaN, one fold)
    means_var: float  # variance of the fold means (ddof 1); NaN with one fold

    @property
    def seed_dof(self) -> int:
        return int((self.sizes - 1).sum())

    @property
    def training_var(self) -> float:
        """Seed-to-seed variance beyond the seed-specific sample noise: what training randomness adds."""
        return max(0.0, self.seed_var - self.specific_var) if self.seed_dof else float("nan")


def components(folds: list[tuple[np.ndarray, np.ndarray]]) -> Parts:
    """Variance components of cell values v_fs = Σ_i w_i x_fsi, fold by fold (labels, x of shape (S, n)).

    A cell's sample variance (its samples resampled within class) is specific + shared; the seed-averaged
    row's is specific / S + shared. The two tell the noise a fresh seed redraws (specific: which samples this
    model gets right by chance) from the noise common to the fold's models (shared: which samples the fold
    happens to hold). A one-seed fold counts its sample variance beyond the pooled specific part as shared.
    The fold means vary by s²/S + shared within folds; fold_var is what they vary by beyond that.
    """
    values, cell_var, averaged, spec, spec_dof = [], [], [], [], []
    for labels, x in folds:
        values.append(x @ sample_weights(labels))
        per_cell = _class_variance(labels, x)
        cell_var.append(per_cell)
        averaged.append(float(_class_variance(labels, x.mean(0))))
        if len(x) > 1:
            spec.append(max(0.0, (per_cell.mean() - averaged[-1]) * len(x) / (len(x) - 1)))
            spec_dof.append(len(x) - 1)
    sizes = np.array([len(v) for v in values])
    dof = int((sizes - 1).sum())
    seed_var = sum(((v - v.mean()) ** 2).sum() for v in values) / dof if dof else float("nan")
    specific = float(np.average(spec, weights=spec_dof)) if dof else 0.0
    shared = np.array([max(0.0, avg - specific / len(v)) if len(v) > 1 else max(0.0, avg - specific)
                       for avg, v in zip(averaged, values)])
    means = np.array([v.mean() for v in values])
    means_var, fold_var = float("nan"), float("nan")
    if len(means) > 1:
        means_var = float(means.var(ddof=1))
        fold_var = max(0.0, means_var - float((np.nan_to_num(seed_var) / sizes + shared).mean()))
    return Parts(values, sizes, np.concatenate(cell_var), float(seed_var), specific, np.array(averaged), shared,
                  fold_var, means_var)


def budget(parts: Parts) -> dict:
    """The variance budget in SDs (BA units)."""
    cells = np.concatenate(parts.values)
    return {"mean": float(cells.mean()), "n_cells": int(len(cells)), "n_folds": len(parts.values),
            "seeds_per_fold": parts.sizes.tolist(), "cells": cells.tolist(),
            "seed_sd": _sqrt(parts.seed_var), "fold_sd": _sqrt(parts.fold_var),
            "sample_se": _sqrt(parts.cell_var.mean()), "training_sd": _sqrt(parts.training_var),
            "seed_specific_se": _sqrt(parts.specific_var) if parts.seed_dof else float("nan"),
            "shared_sample_se": _sqrt(parts.shared.mean())}


def _sqrt(v: float) -> float:
    return float(np.sqrt(v)) if np.isfinite(v) else float("nan")


def variance_budget(cells: Cells) -> dict:
    """One variant's cells: BA per cell, its mean and variance components, SDs in BA units.

    Returns {"mean", "n_cells", "n_folds", "seeds_per_fold", "cells" (BA per cell, folds sorted), "seed_sd" (SD
    of a cell's BA across seeds within a fold, pooled), "fold_sd" (SD of the fold means beyond the within-fold
    part), "sample_se" (the class-stratified SE of one cell's BA on its own samples), "training_sd" (seed SD
    beyond the seed-specific sample noise), "seed_specific_se", "shared_sample_se"}; NaN where the cells cannot
    tell (one seed everywhere, one fold).
    """
    folds = []
    for fold, runs in sorted(by_fold(cells).items()):
        seeds = sorted(runs, key=str)
        labels = runs[seeds[0]][0]
        check_labels(fold, runs, labels)
        folds.append((labels.astype(np.int64), np.stack([runs[s][1] == labels for s in seeds]).astype(float)))
    return budget(components(folds))


def difference_parts(folds: list[Fold]) -> Parts:
    return components([(f.labels, f.contrast(f.correct, 0)) for f in folds])


def primary_df(parts: Parts) -> float:
    """Degrees of freedom of the primary's t reference (Satterthwaite over the parts estimated from few values).

    The seeds' part Σ w_f² s²/S_f (w_f = S_f / J) rests on Σ (S_f - 1) values and the fold part on K - 1; the
    shared sample part, pinned down by hundreds of samples, adds variance without adding degrees of freedom
    (counting it as exact would let a lucky small seed spread pass for a precise one: 10% false positives on
    2 seeds). With one seed per fold the fold means carry the training variance: K - 1.
    """
    sizes = parts.sizes
    w2 = (sizes / sizes.sum()) ** 2
    dof = parts.seed_dof
    if not dof:
        return float(len(sizes) - 1) if len(sizes) > 1 else float("inf")
    seed_part = float((w2 / sizes).sum() * parts.seed_var)
    fold_part = float(w2.sum() * np.nan_to_num(parts.fold_var))
    noise = seed_part ** 2 / dof + (fold_part ** 2 / (len(sizes) - 1) if fold_part > 0 else 0.0)
    return (seed_part + fold_part) ** 2 / noise if noise > 0 else float("inf")
