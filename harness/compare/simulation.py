"""The calibration model of benchmarks/calibration.md: two variants' cells with a known truth, for the
simulation tests and the calibration benchmark."""
from __future__ import annotations

import numpy as np
from scipy import stats as sps

from harness.compare.version_cells import N_CLASSES, REAL_FOLD_COUNTS


def simulate(rng: np.random.Generator, class_counts=REAL_FOLD_COUNTS, n_folds: int = 5, n_seeds: int = 3,
             recalls=(0.90, 0.50, 0.60), difference: float = 0.0, seed_sd: float = 0.03, latent_corr: float = 0.5,
             fold_sd: float = 0.0) -> tuple[dict, dict]:
    """Two variants' cells with known truth: the model of benchmarks/calibration.md.

    Each fold has its own validation samples (class_counts of them). Sample i has a difficulty z_i ~ N(0, 1)
    shared by every model on its fold; a model (variant, fold, seed) gets sample i right when
    sqrt(latent_corr) z_i + sqrt(1 - latent_corr) e_mi < Phi^-1(q_mk), e_mi ~ N(0, 1) its own noise, so errors
    are correlated between the two variants and between seeds. q_mk = recall_k + u_mk (+ difference + g_f for b):
    u_mk ~ N(0, seed_sd) a training shift of each class recall per model, g_f ~ N(0, fold_sd) a version x fold
    effect. b's expected BA is a's + `difference`. Wrong answers go to the neighbouring class.
    Returns (cells_a, cells_b), each {(fold, seed): (labels, preds)}.
    """
    labels = np.repeat(np.arange(N_CLASSES), class_counts)
    wrong = np.array([1, 0, 1])[labels]
    n = len(labels)
    cells: tuple[dict, dict] = ({}, {})
    for fold in range(n_folds):
        z = rng.standard_normal(n)
        g = rng.normal(0.0, fold_sd) if fold_sd else 0.0
        for v, out in enumerate(cells):
            shift = (difference + g) if v else 0.0
            q = np.clip(np.asarray(recalls)[None] + shift + rng.normal(0.0, seed_sd, (n_seeds, N_CLASSES)),
                        1e-3, 1 - 1e-3)
            score = np.sqrt(latent_corr) * z + np.sqrt(1 - latent_corr) * rng.standard_normal((n_seeds, n))
            right = score < sps.norm.ppf(q[:, labels])
            for s in range(n_seeds):
                out[(fold, s)] = (labels, np.where(right[s], labels, wrong))
    return cells


def simulated_components(class_counts=REAL_FOLD_COUNTS, recalls=(0.90, 0.50, 0.60), seed_sd: float = 0.03,
                         latent_corr: float = 0.5) -> dict:
    """The true components of `simulate`'s cells (no seed shift in the discordance, no clipping), for `plan`:
    {"training_sd" (one variant's BA from seed to seed), "sample_se" (one cell's paired difference on its
    samples), "error_correlation" (per class: the correlation of two models' right/wrong on a sample)}."""
    r = np.asarray(recalls, float)
    t = sps.norm.ppf(r)
    both = np.array([sps.multivariate_normal(cov=[[1, latent_corr], [latent_corr, 1]]).cdf([v, v]) for v in t])
    phi = (both - r ** 2) / (r * (1 - r))
    discordance = 2 * (r - both)
    return {"training_sd": float(seed_sd / np.sqrt(N_CLASSES)),
            "sample_se": float(np.sqrt((discordance / np.asarray(class_counts, float)).sum()) / N_CLASSES),
            "error_correlation": phi.tolist()}
