"""Planning a comparison before anything trains: the minimum detectable BA difference (MDD) at a power for
folds x seeds cells, and the seeds that would resolve a difference, from the primary test's variance formula."""
from __future__ import annotations

import numpy as np
from scipy import stats as sps

from harness.compare.version_cells import ALL_FOLDS, N_CLASSES, PRIMARY, REAL_FOLD_COUNTS


def mdd_at(variance: float, df: float, alpha: float, power: float) -> float:
    """The true difference a two-sided level-alpha t-test with this variance and df detects with `power`."""
    if not variance > 0:
        return 0.0
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * np.sqrt(variance))


def _expected_excess(scale: float, c: float, nu: int) -> float:
    """E[(X - c)+] for X ~ scale x chi2_nu / nu: the mean of a floored variance estimate's excess over c."""
    if scale <= 0:
        return 0.0
    x = c * nu / scale
    return float(scale * sps.chi2.sf(x, nu + 2) - c * sps.chi2.sf(x, nu))


def _design(n_folds: int, n_seeds: int, training: float, specific: float, shared: float, fold: float) -> dict:
    """What the primary test sees on n_folds x n_seeds cells whose difference has these per-cell components
    (training: both variants' seed variance beyond sample noise; specific, shared: sample noise a fresh seed
    redraws, and that the fold's seeds share; fold: a version x fold variance).

    {"var" (true variance of the mean difference), "test_var" (the test's expected variance estimate: its fold
    part is floored at 0, so it exceeds the truth by E[(fold means' variance - within)+]), "df"}.
    """
    if n_folds == 1 and n_seeds == 1:  # two trained models: the test knows the sample noise only
        return {"var": specific + shared, "test_var": specific + shared, "df": float("inf")}
    if n_seeds == 1:  # one seed per fold: training variance reaches the test through the fold means alone
        known, per_fold = specific + shared, training + specific + shared + fold
        if n_folds == 1:
            return {"var": per_fold, "test_var": known, "df": float("inf")}
        test = known + _expected_excess(per_fold, known, n_folds - 1)
        return {"var": per_fold / n_folds, "test_var": test / n_folds, "df": float(n_folds - 1)}
    within = (training + specific) / n_seeds + shared
    excess = _expected_excess(within + fold, within, n_folds - 1) if n_folds > 1 else 0.0
    # the test's df is the seeds' K (S - 1) whenever its fold part floors at 0, and rarely much more
    return {"var": (within + fold) / n_folds, "test_var": (within + excess) / n_folds,
            "df": float(n_folds * (n_seeds - 1))}


def _design_mdd(design: dict, alpha: float, power: float) -> float:
    """The true difference the test detects with `power`: it rejects when |d| > t sqrt(test_var), d ~ N(delta, var)."""
    if not design["test_var"] > 0:
        return 0.0
    df = design["df"]
    return float(sps.t.ppf(1 - alpha / 2, df) * np.sqrt(design["test_var"]) + sps.t.ppf(power, df) *
                 np.sqrt(design["var"]))


def _seeds_needed(target: float, n_folds: int, components: tuple, alpha: float, power: float,
                  max_seeds: int) -> int | None:
    """The fewest seeds per fold (2 or more) whose MDD is at most |target|; None when max_seeds do not."""
    if not target or not all(np.isfinite(components)):
        return None
    resolves = lambda seeds: _design_mdd(_design(n_folds, seeds, *components), alpha, power) <= abs(target)
    if not resolves(max_seeds):
        return None
    low, high = 1, max_seeds  # the MDD falls with the seeds: bisect for the first that resolves
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if resolves(mid) else (mid, high)
    return high


def plan_rows(components: tuple, folds: list[int], target: float | None, alpha: float, power: float,
               max_seeds: int) -> dict:
    """components = (training, specific, shared, fold) of the cell difference; NaN ones give no plan."""
    if not all(np.isfinite(components)):
        return {"table": [], "seeds_needed": [{"folds": k, "seeds": None} for k in folds] if target else []}
    table = [{"folds": k, "seeds": s, "mdd": _design_mdd(_design(k, s, *components), alpha, power)}
             for k in folds for s in (2, 3, 5, 10)]
    needed = [{"folds": k, "seeds": _seeds_needed(target, k, components, alpha, power, max_seeds)}
              for k in folds] if target else []
    return {"table": table, "seeds_needed": needed}


def plan(class_counts=REAL_FOLD_COUNTS, recalls=(0.90, 0.50, 0.60), training_sd: float = 0.03 / np.sqrt(3),
         error_correlation: float = 0.3, fold_sd: float = 0.0, shared_sample_se: float = 0.0, n_folds: int = 5,
         n_seeds: int = 3, target: float | None = None, alpha: float = 0.05, power: float = 0.8,
         sample_se: float | None = None, max_seeds: int = 50) -> dict:
    """Before anything trains: what n_folds x n_seeds cells per variant can resolve, from assumed components.

    class_counts: one validation fold's Normal/Mild, Moderate, Severe counts (`DEMO_FOLD_COUNTS`,
    `REAL_FOLD_COUNTS`); recalls: the expected recalls; training_sd: the SD of one variant's BA from seed to
    seed beyond sample noise (default: 3 recall points per class, independent, the calibration's); error_
    correlation: the correlation of two models' right/wrong on one sample (0.3 is the calibration model's);
    fold_sd: a version x fold effect on the difference; shared_sample_se: the part of the difference's sample
    noise that a fold's seeds share (b better on particular samples; 0 when the variants err alike on
    average); sample_se: the paired per-cell sample SE of the difference, instead of computing it from counts,
    recalls and correlation. target: a difference to resolve. All in BA units (0.033 = 3.3 points).
    Returns {"method", "level", "n_folds", "n_seeds", "sample_se", "cell_sd" (SD of one cell's difference),
    "se" (of the mean difference), "test_se" (what the test will estimate it as, on average), "df", "mdd",
    "alpha", "power", "target", "table" ([{"folds", "seeds", "mdd"}]), "seeds_needed" ([{"folds", "seeds" or
    None}])}.
    One fold x one seed is "model" level: its MDD is the sample-noise one of a two-model test.
    """
    counts, r = np.asarray(class_counts, float), np.asarray(recalls, float)
    if sample_se is None:
        present = counts > 0
        per_class = 2 * r * (1 - r) * (1 - error_correlation) / np.where(present, counts, 1)
        sample_se = float(np.sqrt(per_class[present].sum()) / N_CLASSES)
    components = (2 * training_sd ** 2, sample_se ** 2, shared_sample_se ** 2, fold_sd ** 2)
    design = _design(n_folds, n_seeds, *components)
    folds = sorted({n_folds, ALL_FOLDS})
    return {"method": PRIMARY, "level": "model" if n_folds == 1 and n_seeds == 1 else "version",
            "n_folds": n_folds, "n_seeds": n_seeds, "sample_se": sample_se,
            "cell_sd": float(np.sqrt(2 * training_sd ** 2 + sample_se ** 2 + shared_sample_se ** 2)),
            "se": float(np.sqrt(design["var"])), "test_se": float(np.sqrt(design["test_var"])), "df": design["df"],
            "mdd": _design_mdd(design, alpha, power), "alpha": alpha, "power": power, "target": target,
            **plan_rows(components, folds, target, alpha, power, max_seeds)}


def points(x: float | None) -> str:
    """A BA difference in points, one decimal ('-' when unknown)."""
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def plan_lines(p: dict) -> list[str]:
    """A plan in words, one line each (what `--plan` can print)."""
    pts = points
    lines = [f"{p['n_folds']} fold(s) x {p['n_seeds']} seed(s) per variant: minimum detectable BA difference "
             f"{pts(p['mdd'])} points at {100 * p['power']:.0f}% power, alpha {p['alpha']} ({p['method']})"]
    if p["level"] == "model":
        lines.append("one fold x one seed compares two trained models; training variance is not measured")
    lines.append("MDD in points by folds x seeds: " + "; ".join(
        f"{r['folds']}x{r['seeds']} {pts(r['mdd'])}" for r in p["table"]))
    for row in p.get("seeds_needed", []):
        seeds = row["seeds"]
        lines.append(f"to resolve {pts(p['target'])} points on {row['folds']} fold(s): "
                     + (f"{seeds} seeds per fold" if seeds else "more seeds than planned for (the fold part "
                                                                "or the budget limits it)"))
    return lines
