"""Calibration of compare's tests (issue 17): false-positive rate, power and interval coverage on simulated
cells whose truth is known, for today's pooled model-level test and the three version-level methods.

    python benchmarks/calibration.py [--replications 1000] [--workers 2] [--out benchmarks/calibration.json]

The simulation model is `harness.compare.simulation.simulate` (benchmarks/calibration.md says what it draws).
Each scenario runs in its own process with its own seed, so the figures do not depend on --workers.
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.stats import binom

from harness.compare import simulation, stats, versions
from harness.compare.versions import DEMO_FOLD_COUNTS

ALPHA = 0.05
N_BOOT = 400  # the version-level bootstrap: its SE to about 4%
TODAY_BOOT, TODAY_PERM = 400, 1000  # today's pooled test: p resolved to 1e-3, ample at alpha 0.05

# (name, design, run today's pooled test too)
SCENARIOS = [
    ("model null, 1x1, real", dict(n_folds=1, n_seeds=1, seed_sd=0.0), True),
    ("model null, 1x1, demo", dict(n_folds=1, n_seeds=1, seed_sd=0.0, class_counts=DEMO_FOLD_COUNTS), True),
    ("audit null, 1x1", dict(n_folds=1, n_seeds=1), True),
    ("audit null, 1x3", dict(n_folds=1, n_seeds=3), True),
    ("audit null, 5x1", dict(n_folds=5, n_seeds=1), True),
    ("audit null, 5x3", dict(n_folds=5, n_seeds=3), True),
    ("audit null, 1x5", dict(n_folds=1, n_seeds=5), False),
    ("seed 8 pts null, 1x2", dict(n_folds=1, n_seeds=2, seed_sd=0.08), False),
    ("seed 8 pts null, 1x3", dict(n_folds=1, n_seeds=3, seed_sd=0.08), False),
    ("seed 8 pts null, 5x2", dict(n_folds=5, n_seeds=2, seed_sd=0.08), False),
    ("seed 1.5 pts null, 1x3", dict(n_folds=1, n_seeds=3, seed_sd=0.015), False),
    ("demo null, 1x3", dict(n_folds=1, n_seeds=3, class_counts=DEMO_FOLD_COUNTS), False),
    ("demo null, 5x3", dict(n_folds=5, n_seeds=3, class_counts=DEMO_FOLD_COUNTS), False),
    ("fold effect 2 pts null, 5x3", dict(n_folds=5, n_seeds=3, fold_sd=0.02), False),
    ("3.3 pts, 5x3", dict(n_folds=5, n_seeds=3, difference=0.033), True),
    ("3.3 pts, 1x3", dict(n_folds=1, n_seeds=3, difference=0.033), False),
    ("3.3 pts, 1x5", dict(n_folds=1, n_seeds=5, difference=0.033), False),
    ("3.3 pts, 5x5", dict(n_folds=5, n_seeds=5, difference=0.033), False),
]
METHODS = ("today_rows", "today_clusters", "plain_bootstrap", "hierarchical_bootstrap", "nadeau_bengio", "p_better")


def todays_test(cells_a: dict, cells_b: dict, seed: int) -> tuple[bool, bool]:
    """Today's `harness compare` on every paired cell's rows pooled: stats.paired_difference's clustered
    bootstrap interval with (a) the permutation before issue 17, rows swapped one by one, and (b) now, a
    sample's rows swapped together. Significant when p < 0.05 and the interval excludes 0 (Holm of one p)."""
    keys = sorted(set(cells_a) & set(cells_b))
    labels = np.concatenate([cells_a[k][0] for k in keys])
    preds_a = np.concatenate([cells_a[k][1] for k in keys])
    preds_b = np.concatenate([cells_b[k][1] for k in keys])
    clusters = np.concatenate([k[0] * 1_000_000 + np.arange(len(cells_a[k][0])) for k in keys])
    grouped = stats.paired_difference(labels, preds_a, preds_b, TODAY_BOOT, TODAY_PERM, seed, clusters=clusters)
    excludes = grouped["low"] > 0 or grouped["high"] < 0
    rows = stats.paired_difference(labels, preds_a, preds_b, 2, TODAY_PERM, seed)["p_value"]  # rows swapped
    return bool(rows < ALPHA and excludes), bool(grouped["p_value"] < ALPHA and excludes)


def run_scenario(args) -> dict:
    name, design, with_today, replications, seed = args
    rng = np.random.default_rng(seed)
    truth = design.get("difference", 0.0)
    hits = {m: 0 for m in METHODS}
    covered = covered_plain = 0
    start = time.perf_counter()
    for r in range(replications):
        cells_a, cells_b = simulation.simulate(rng, **design)
        result = versions.compare_versions(cells_a, cells_b, n_boot=N_BOOT, seed=r)
        tests = result["tests"]
        hits["hierarchical_bootstrap"] += result["p_value"] < ALPHA
        hits["plain_bootstrap"] += tests["hierarchical_bootstrap"]["percentile_p_value"] < ALPHA
        hits["nadeau_bengio"] += tests["nadeau_bengio"]["p_value"] < ALPHA  # NaN (one cell) counts as no
        hits["p_better"] += tests["p_better"]["p_value"] < ALPHA
        covered += result["low"] <= truth <= result["high"]
        hb = tests["hierarchical_bootstrap"]
        covered_plain += hb["percentile_low"] <= truth <= hb["percentile_high"]
        if with_today:
            rows, grouped = todays_test(cells_a, cells_b, r)
            hits["today_rows"] += rows
            hits["today_clusters"] += grouped
    one_cell = design["n_folds"] * design["n_seeds"] == 1  # no spread of cells: NB and P(better) do not apply
    rates = {m: hits[m] / replications for m in METHODS}
    rates |= {m: None for m in METHODS if (m.startswith("today") and not with_today)
              or (one_cell and m in ("nadeau_bengio", "p_better"))}
    return {"scenario": name, "design": design, "replications": replications, "rates": rates,
            "primary_coverage": covered / replications, "plain_coverage": covered_plain / replications,
            "seconds": time.perf_counter() - start}


def mdd_check(replications: int, seed: int) -> dict:
    """Power of the primary at the MDD `versions.plan` reports for 5 folds x 3 seeds (and 5 x 2, 1 x 5)."""
    truth = simulation.simulated_components()
    out = []
    for folds, seeds in ((5, 3), (5, 2), (1, 5)):
        planned = versions.plan(n_folds=folds, n_seeds=seeds, training_sd=truth["training_sd"],
                                sample_se=truth["sample_se"])
        rng = np.random.default_rng(seed + folds * 10 + seeds)
        hits = sum(versions.compare_versions(*simulation.simulate(rng, n_folds=folds, n_seeds=seeds,
                                                                difference=planned["mdd"]),
                                             n_boot=N_BOOT, seed=r)["p_value"] < ALPHA
                   for r in range(replications))
        out.append({"folds": folds, "seeds": seeds, "mdd": planned["mdd"], "power": hits / replications})
    return {"mdd": out}


def recall_coverage(replications: int, seed: int) -> dict:
    """Per-class recall and BA intervals on the demo's fold (101/8/6): exact coverage of a 6-sample recall over a
    grid of true recalls, and simulated coverage of stats.recall_intervals (new vs its bootstrap percentiles)."""
    grid = np.linspace(0.05, 0.95, 181)
    x = np.arange(7)
    jeffreys = np.array([stats.jeffreys_interval(k, 6) for k in x])
    percentile = np.column_stack([binom.ppf(0.025, 6, x / 6), binom.ppf(0.975, 6, x / 6)]) / 6
    exact = {}
    for name, bounds in (("jeffreys", jeffreys), ("percentile", percentile)):
        cover = np.array([binom.pmf(x, 6, p)[(bounds[:, 0] <= p) & (p <= bounds[:, 1])].sum() for p in grid])
        exact[name] = {"mean": float(cover.mean()), "min": float(cover.min()),
                       "at": {f"{p:.2f}": float(cover[np.argmin(abs(grid - p))]) for p in (0.3, 0.5, 0.6, 0.8, 0.9)}}
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], DEMO_FOLD_COUNTS)
    counts = {k: 0 for k in ("severe", "severe_old", "severe_zero_width_old", "ba", "ba_old")}
    fixed = {k: 0 for k in ("severe", "severe_old", "ba", "ba_old")}
    for r in range(replications):
        for kind, recalls in (("drawn", np.array([rng.uniform(0.8, 0.97), rng.uniform(0.2, 0.8),
                                                   rng.uniform(0.3, 0.95)])),
                              ("fixed", np.array([0.90, 0.50, 0.60]))):
            right = rng.random(len(labels)) < recalls[labels]
            preds = np.where(right, labels, np.array([1, 0, 1])[labels])
            iv = stats.recall_intervals(labels, preds, n_boot=1000, seed=r)
            sev, ba = iv["recall/severe"], iv["balanced_accuracy"]
            tally = counts if kind == "drawn" else fixed
            tally["severe"] += sev["low"] <= recalls[2] <= sev["high"]
            tally["severe_old"] += sev["bootstrap_low"] <= recalls[2] <= sev["bootstrap_high"]
            tally["ba"] += ba["low"] <= recalls.mean() <= ba["high"]
            tally["ba_old"] += ba["bootstrap_low"] <= recalls.mean() <= ba["bootstrap_high"]
            if kind == "drawn":
                tally["severe_zero_width_old"] += sev["bootstrap_low"] == sev["bootstrap_high"]
    return {"exact_6_samples": exact, "replications": replications,
            "drawn_recalls": {k: v / replications for k, v in counts.items()},
            "fixed_recalls_0.9_0.5_0.6": {k: v / replications for k, v in fixed.items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).with_name("calibration.json")))
    args = parser.parse_args()
    start = time.perf_counter()
    jobs = [(name, design, today, args.replications, 1000 + i) for i, (name, design, today) in enumerate(SCENARIOS)]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_scenario, job) for job in jobs]
        extra = [pool.submit(mdd_check, args.replications // 2, 77),
                 pool.submit(recall_coverage, args.replications, 88)]
        results = [f.result() for f in futures]
        mdd, coverage = (f.result() for f in extra)
    bound = ALPHA + 2.5 * np.sqrt(ALPHA * (1 - ALPHA) / args.replications)
    out = {"replications": args.replications, "fpr_bound": bound, "n_boot": N_BOOT, "scenarios": results,
           **mdd, "recall_coverage": coverage, "seconds": time.perf_counter() - start}
    Path(args.out).write_text(json.dumps(out, indent=2))
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
    print(f"| scenario | {' | '.join(METHODS)} | primary covers | plain covers |")
    print("|---" * (len(METHODS) + 3) + "|")
    for r in results:
        print(f"| {r['scenario']} | " + " | ".join(pct(r["rates"][m]) for m in METHODS)
              + f" | {pct(r['primary_coverage'])} | {pct(r['plain_coverage'])} |")
    print(f"FPR bound at R={args.replications}: {pct(bound)}%")
    for row in out["mdd"]:
        print(f"MDD {row['folds']}x{row['seeds']}: {100 * row['mdd']:.2f} points, detected {pct(row['power'])}%")
    print(json.dumps(coverage, indent=1))
    print(f"{out['seconds']:.0f} s")


if __name__ == "__main__":
    main()
