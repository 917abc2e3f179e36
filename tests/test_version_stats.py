"""harness.compare.versions on simulated cells whose truth is known (numpy/scipy, seeded, a few seconds each).

Rates are checked against 5% plus Monte Carlo error: with R replications a calibrated test rejects at most
ALPHA + 2.5 sqrt(ALPHA (1 - ALPHA) / R) of true nulls (about 7.7% at R = 400), and a rate "about 80%" lies in
[0.70, 0.90]. The simulation model is `harness.compare.simulation.simulate` (benchmarks/calibration.md):
correlated errors between the two variants and between seeds, a seed-to-seed shift of 3 recall points per class,
real or demo fold counts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t

from harness.compare import stats, versions
from harness.compare.simulation import simulate, simulated_components
from harness.compare.versions import DEMO_FOLD_COUNTS, REAL_FOLD_COUNTS, compare_versions

ALPHA = 0.05


def bound(replications: int) -> float:
    """The most a level-5% test may reject of R true nulls, Monte Carlo error allowed."""
    return ALPHA + 2.5 * np.sqrt(ALPHA * (1 - ALPHA) / replications)


def rejections(replications: int, seed: int, n_boot: int = 100, **design) -> dict[str, float]:
    """Share of replications each method calls significant (p < 0.05), and how often the primary's interval
    covers the true difference."""
    rng = np.random.default_rng(seed)
    truth = design.get("difference", 0.0)
    hits = {"primary": 0, "plain": 0, "nadeau_bengio": 0, "p_better": 0, "covered": 0}
    for r in range(replications):
        result = compare_versions(*simulate(rng, **design), n_boot=n_boot, seed=r)
        tests = result["tests"]
        hits["primary"] += result["p_value"] < ALPHA
        hits["plain"] += tests["hierarchical_bootstrap"]["percentile_p_value"] < ALPHA
        hits["nadeau_bengio"] += tests["nadeau_bengio"]["p_value"] < ALPHA
        hits["p_better"] += tests["p_better"]["p_value"] < ALPHA
        hits["covered"] += result["low"] <= truth <= result["high"]
    return {k: v / replications for k, v in hits.items()}


# ---------------------------------------------------------------------------------------------------------------
# false positives on A/A nulls


@pytest.mark.parametrize("counts", [REAL_FOLD_COUNTS, DEMO_FOLD_COUNTS], ids=["real", "demo"])
def test_one_fold_one_seed_model_level_a_a(counts):
    # two trained models with the same recalls, errors correlated, no seed noise: a model-level null
    rates = rejections(400, seed=1, class_counts=counts, n_folds=1, n_seeds=1, seed_sd=0.0)
    assert rates["primary"] <= bound(400)
    assert rates["covered"] >= 1 - bound(400)  # Newcombe's paired intervals, 6 Severe samples included


def test_five_folds_one_seed_a_a():
    rates = rejections(300, seed=2, n_folds=5, n_seeds=1, seed_sd=0.0)
    assert rates["primary"] <= bound(300)


def test_five_folds_three_seeds_with_seed_noise_a_a():
    # the audit's null: equal expected recalls, a seed-to-seed shift of 3 recall points, 5 folds x 3 seeds
    rates = rejections(300, seed=3, n_folds=5, n_seeds=3, seed_sd=0.03)
    assert rates["primary"] <= bound(300)
    assert rates["nadeau_bengio"] <= bound(300)


def test_three_seeds_on_one_fold_with_seed_noise_a_a():
    rates = rejections(400, seed=4, n_folds=1, n_seeds=3, seed_sd=0.03)
    assert rates["primary"] <= bound(400)


def test_seed_dominated_null_needs_the_corrections():
    # 8 recall points of seed shift, 2 seeds on one fold: resampling 2 seeds shrinks their spread by half and the
    # plain hierarchical bootstrap (the audit's) rejects far too often; the corrected primary holds
    rates = rejections(300, seed=5, n_folds=1, n_seeds=2, seed_sd=0.08)
    assert rates["primary"] <= bound(300)
    assert rates["plain"] > bound(300)


def test_todays_pooled_test_read_as_a_version_claim_exceeds_five_percent():
    # regression guard: the model-level pooled test (stats.paired_difference on all seeds' rows, clusters by
    # sample) does not see seed noise, so on the seed-noise null it calls a difference far more often than 5%;
    # the version-level test on the same cells holds
    rng = np.random.default_rng(6)
    replications, today, new = 300, 0, 0
    for r in range(replications):
        cells_a, cells_b = simulate(rng, n_folds=1, n_seeds=3, seed_sd=0.03)
        keys = sorted(cells_a)
        labels = np.concatenate([cells_a[k][0] for k in keys])
        clusters = np.concatenate([np.arange(len(cells_a[k][0])) for k in keys])
        diff = stats.paired_difference(labels, np.concatenate([cells_a[k][1] for k in keys]),
                                       np.concatenate([cells_b[k][1] for k in keys]), n_boot=200, n_perm=200,
                                       seed=r, clusters=clusters)
        today += diff["p_value"] < ALPHA and (diff["low"] > 0 or diff["high"] < 0)
        new += compare_versions(cells_a, cells_b, n_boot=100, seed=r)["p_value"] < ALPHA
    assert today / replications > 0.10  # 16% in benchmarks/calibration.md
    assert new / replications <= bound(replications)


# ---------------------------------------------------------------------------------------------------------------
# power and planning


def test_reported_mdd_is_detected_about_80_percent_of_the_time():
    truth = simulated_components(seed_sd=0.03)
    planned = versions.plan(n_folds=5, n_seeds=3, training_sd=truth["training_sd"], sample_se=truth["sample_se"])
    assert 0.02 < planned["mdd"] < 0.04  # about 3 BA points at the real counts
    rates = rejections(300, seed=7, n_folds=5, n_seeds=3, seed_sd=0.03, difference=planned["mdd"])
    assert 0.70 <= rates["primary"] <= 0.90


def test_primary_beats_nadeau_bengio_and_p_better_at_a_true_difference():
    # the audit's alternative: 3.3 BA points on 5 folds x 3 seeds (primary ~85%, NB ~22%, P(better) ~67%)
    rates = rejections(200, seed=8, n_folds=5, n_seeds=3, seed_sd=0.03, difference=0.033)
    assert rates["primary"] >= 0.75
    assert rates["primary"] > rates["p_better"] > rates["nadeau_bengio"]


def test_plan_before_training_for_demo_and_real_counts():
    real = versions.plan(REAL_FOLD_COUNTS, n_folds=5, n_seeds=3, target=0.02)
    demo = versions.plan(DEMO_FOLD_COUNTS, n_folds=1, n_seeds=3)
    assert real["method"] == demo["method"] == versions.PRIMARY
    assert real["level"] == "version" and versions.plan(n_folds=1, n_seeds=1)["level"] == "model"
    assert 0.02 < real["mdd"] < 0.04 and demo["mdd"] > 0.15  # 6 Severe samples resolve nothing small
    mdds = {(row["folds"], row["seeds"]): row["mdd"] for row in real["table"]}
    assert mdds[(5, 10)] < mdds[(5, 5)] < mdds[(5, 3)] < mdds[(5, 2)]
    (needed,) = real["seeds_needed"]
    assert needed["folds"] == 5 and needed["seeds"] > 3
    more = versions.plan(REAL_FOLD_COUNTS, n_folds=5, n_seeds=needed["seeds"])
    fewer = versions.plan(REAL_FOLD_COUNTS, n_folds=5, n_seeds=needed["seeds"] - 1)
    assert more["mdd"] <= 0.02 < fewer["mdd"]
    lines = versions.plan_lines(real)
    assert lines[0].startswith("5 fold(s) x 3 seed(s) per variant: minimum detectable BA difference")
    assert any(f"{needed['seeds']} seeds per fold" in line for line in lines)


# ---------------------------------------------------------------------------------------------------------------
# coverage


def test_version_interval_covers_the_true_difference():
    rates = rejections(300, seed=9, n_folds=5, n_seeds=3, seed_sd=0.03, difference=0.02)
    assert rates["covered"] >= 1 - bound(300)


def test_recall_intervals_cover_on_six_severe_samples():
    # one model on the demo's fold (101/8/6), its true recalls drawn afresh per replication (Severe 0.3-0.95):
    # Jeffreys per class and MOVER for BA cover about 95% on average (at one fixed recall a 6-sample interval
    # covers anywhere from 91% to 99%: 7 possible counts); the old class-stratified percentile interval covers
    # far less and is zero-width whenever all 6 are right or all wrong
    rng = np.random.default_rng(10)
    replications, covered, covered_ba, covered_old, zero_width = 800, 0, 0, 0, 0
    labels = np.repeat([0, 1, 2], DEMO_FOLD_COUNTS)
    for r in range(replications):
        recalls = np.array([rng.uniform(0.8, 0.97), rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.95)])
        right = rng.random(len(labels)) < recalls[labels]
        preds = np.where(right, labels, np.array([1, 0, 1])[labels])
        intervals = stats.recall_intervals(labels, preds, n_boot=200, seed=r)
        severe, ba = intervals["recall/severe"], intervals["balanced_accuracy"]
        covered += severe["low"] <= recalls[2] <= severe["high"]
        covered_ba += ba["low"] <= recalls.mean() <= ba["high"]
        covered_old += severe["bootstrap_low"] <= recalls[2] <= severe["bootstrap_high"]
        zero_width += severe["bootstrap_low"] == severe["bootstrap_high"]
    floor = 1 - bound(replications)
    assert covered / replications >= floor and covered_ba / replications >= floor
    assert covered_old / replications < 0.85 and zero_width > 0.1 * replications


# ---------------------------------------------------------------------------------------------------------------
# the API on constructed cells


def constructed(n_folds: int, seeds: list, severe_right: dict, counts=(30, 10, 10)) -> dict:
    """{(fold, seed): (labels, preds)}: every Normal and Moderate right, `severe_right[(fold, seed)]` Severe right."""
    labels = np.repeat([0, 1, 2], counts)
    out = {}
    for fold in range(n_folds):
        for seed in seeds:
            preds = labels.copy()
            preds[counts[0] + counts[1] + severe_right[(fold, seed)]:] = 1
            out[(fold, seed)] = (labels, preds)
    return out


def test_paired_mean_difference_pairs_by_fold_and_seed():
    a = constructed(2, [1, 2, 3], {(f, s): 5 for f in range(2) for s in (1, 2, 3)})
    b = constructed(2, [1, 2], {(0, 1): 6, (0, 2): 7, (1, 1): 8, (1, 2): 5})  # seed 3 only in a: unpaired
    result = compare_versions(a, b, "v4", "v9", n_boot=200)
    assert result["cells"] == [[0, 1], [0, 2], [1, 1], [1, 2]] and result["n_cells"] == 4
    assert result["difference"] == pytest.approx(np.mean([1, 2, 3, 0]) / 10 / 3)
    assert result["ba_b"] - result["ba_a"] == pytest.approx(result["difference"])
    assert result["variance"]["a"]["n_cells"] == 6 and result["variance"]["b"]["n_cells"] == 4
    assert result["method"] == versions.PRIMARY
    assert all(t["method"] == name for name, t in result["tests"].items())
    assert set(result["tests"]) == set(versions.METHODS)


def test_identical_variants_differ_by_nothing():
    cells = constructed(3, [0, 1, 2], {(f, s): 3 + f + s for f in range(3) for s in range(3)})
    result = compare_versions(cells, cells, "v4", "v9", n_boot=200)
    assert (result["difference"], result["low"], result["high"], result["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    assert result["verdict"].startswith("v4 and v9 are indistinguishable at this budget (3 folds x 3 seeds)")


def test_variance_budget_on_known_cells():
    # BA of a cell = (1 + 1 + severe_right/10) / 3: known seed SD and fold means
    right = {(0, 0): 4, (0, 1): 6, (1, 0): 5, (1, 1): 7}
    budget = versions.variance_budget(constructed(2, [0, 1], right))
    ba = {k: (2 + v / 10) / 3 for k, v in right.items()}
    assert budget["cells"] == pytest.approx([ba[(0, 0)], ba[(0, 1)], ba[(1, 0)], ba[(1, 1)]])
    assert budget["seed_sd"] == pytest.approx(np.sqrt(((0.2 / 3) ** 2 / 2 * 2) / 2))  # pooled within-fold SD
    severe = np.array([v / 10 for v in right.values()])
    assert budget["sample_se"] == pytest.approx(np.sqrt(np.mean(severe * (1 - severe) / 10)) / 3)
    assert np.isfinite(budget["fold_sd"]) and budget["fold_sd"] >= 0


def test_nadeau_bengio_by_hand():
    d = np.array([0.01, 0.03, -0.01, 0.02, 0.05])
    result = versions.nadeau_bengio(d, train_test_ratio=4.0)
    se = np.sqrt((1 / 5 + 1 / 4) * d.var(ddof=1))
    assert result["se"] == pytest.approx(se) and result["df"] == 4
    assert result["p_value"] == pytest.approx(2 * t.sf(d.mean() / se, 4))
    assert result["method"] == "nadeau_bengio" and np.isnan(versions.nadeau_bengio([0.1])["p_value"])


def test_p_better_counts_pairs_within_a_fold():
    a = constructed(1, [0, 1], {(0, 0): 2, (0, 1): 6})
    b = constructed(1, [0, 1], {(0, 0): 4, (0, 1): 6})
    better = compare_versions(a, b, n_boot=200)["tests"]["p_better"]
    # b's cells {4, 6} against a's {2, 6}: 4>2, 4<6, 6>2, 6=6 -> (1 + 0 + 1 + 0.5) / 4
    assert better["estimate"] == pytest.approx(2.5 / 4) and better["method"] == "p_better"


def test_verdicts_follow_what_was_measured():
    one = compare_versions(constructed(1, [0], {(0, 0): 2}), constructed(1, [0], {(0, 0): 9}, ), "v4", "v9",
                           n_boot=500)
    assert one["level"] == "model"
    assert one["verdict"].startswith("v9 vs v4: these two trained models")
    assert one["verdict"].endswith("training variance not measured (run --seeds 3)")
    assert "better" not in one["verdict"]
    rng = np.random.default_rng(12)
    strong = compare_versions(*simulate(rng, n_folds=5, n_seeds=3, difference=0.08), "v4", "v9", n_boot=300)
    assert strong["level"] == "version"
    assert strong["verdict"] == "v9 scores higher than v4 beyond seed, fold and sample noise (5 folds x 3 seeds)"
    null = compare_versions(*simulate(rng, n_folds=1, n_seeds=3), "v4", "v9", n_boot=300)
    assert null["verdict"].startswith("v4 and v9 are indistinguishable at this budget (1 fold x 3 seeds): MDD")
    # Holm-adjusted p from the caller overrides the raw one
    assert "indistinguishable" in versions.verdict(strong, adjusted_p=0.2)


def test_disagreeing_samples_and_no_pairs_are_refused():
    a = constructed(1, [0], {(0, 0): 2})
    other = {(0, 0): (np.roll(a[(0, 0)][0], 1), a[(0, 0)][1])}
    with pytest.raises(ValueError, match="disagree"):
        compare_versions(a, other)
    with pytest.raises(ValueError, match="nothing to pair"):
        compare_versions(a, constructed(1, [1], {(0, 1): 2}))


def test_cells_from_frame_matches_pooled_input():
    cells = constructed(1, [7, 8], {(0, 7): 3, (0, 8): 4})
    frame = pd.concat([pd.DataFrame({"fold": f, "seed": s, "study_id": np.arange(50)[::-1], "level": 0,
                                     "label": y[::-1], "pred": p[::-1]}) for (f, s), (y, p) in cells.items()])
    back = versions.cells_from_frame(frame)
    assert sorted(back) == [(0, 7), (0, 8)]
    for key in cells:
        assert np.array_equal(back[key][0], cells[key][0]) and np.array_equal(back[key][1], cells[key][1])


def test_each_method_on_its_own():
    rng = np.random.default_rng(13)
    cells_a, cells_b = simulate(rng, n_folds=2, n_seeds=3, difference=0.02)
    paired = versions.paired_difference(cells_a, cells_b)
    full = compare_versions(cells_a, cells_b, n_boot=300, seed=4)
    assert paired["difference"] == pytest.approx(full["difference"]) and len(paired["cell_differences"]) == 6
    assert versions.hierarchical_bootstrap(cells_a, cells_b, n_boot=300, seed=4) == full["tests"][versions.PRIMARY]
    assert versions.p_better(cells_a, cells_b, n_boot=300, seed=4) == full["tests"]["p_better"]
    nb = versions.nadeau_bengio(paired["cell_differences"])
    assert nb == pytest.approx(full["tests"]["nadeau_bengio"]) and nb["method"] == "nadeau_bengio"
