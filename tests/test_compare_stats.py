"""compare_stats on constructed predictions whose answers are known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta, binom, binomtest
from sklearn.metrics import balanced_accuracy_score

from harness.compare.stats import holm, jeffreys_interval, paired_difference, pooled, recall_intervals, verdict
from harness.metrics.classification import classification_metrics

CLASS_SIZES = (600, 60, 90)  # the real fold's proportions, scaled down
INDISTINGUISHABLE = ("B vs A: these two trained models do not differ beyond sample noise; training variance not "
                     "measured (run --seeds 3)")
NOT_VERSIONS = "training variance not measured (run --seeds 3)"


def make_labels(scale: int = 1) -> np.ndarray:
    return np.repeat([0, 1, 2], [n * scale for n in CLASS_SIZES])


def make_run(labels: np.ndarray, severe_right: int = 45, scale: int = 1) -> np.ndarray:
    """540/600 Normal, 30/60 Moderate and `severe_right`/90 Severe right (per scale), errors predicted
    Moderate/Normal."""
    preds = labels.copy()
    for k, right in ((0, 540), (1, 30), (2, severe_right)):
        rows = np.flatnonzero(labels == k)
        wrong = rows[right * scale:]
        preds[wrong] = 1 if k != 1 else 0
    return preds


@pytest.fixture
def labels() -> np.ndarray:
    return make_labels()


def test_point_estimates_match_sklearn_and_harness_metrics(labels):
    preds = make_run(labels)
    ba = recall_intervals(labels, preds, n_boot=200)["balanced_accuracy"]["estimate"]
    assert ba == pytest.approx(balanced_accuracy_score(labels, preds), abs=1e-12)
    assert ba == pytest.approx(classification_metrics(labels, np.eye(3)[preds])["balanced_accuracy"], abs=1e-12)
    assert ba == pytest.approx((0.9 + 0.5 + 0.5) / 3, abs=1e-12)


def test_run_against_itself_is_indistinguishable(labels):
    preds = make_run(labels)
    diff = paired_difference(labels, preds, preds)
    assert (diff["difference"], diff["low"], diff["high"], diff["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    assert verdict(diff, holm([diff["p_value"]])[0], "A", "B") == INDISTINGUISHABLE


def test_twenty_more_severe_right_is_better_beyond_noise(labels):
    run_a, run_b = make_run(labels, severe_right=45), make_run(labels, severe_right=65)
    diff = paired_difference(labels, run_a, run_b)
    assert diff["difference"] == pytest.approx((20 / 90) / 3, abs=1e-12)
    assert diff["n_discordant"] == 20
    assert diff["low"] > 0 and diff["p_value"] < 0.01
    assert diff["low"] <= diff["difference"] <= diff["high"]
    higher = verdict(diff, holm([diff["p_value"]])[0], "A", "B")
    assert higher == ("B vs A: these two trained models differ beyond sample noise (B higher by 7.4 BA points); "
                      + NOT_VERSIONS)
    assert "better" not in higher  # a statement about two trained models, never about versions

    reverse = paired_difference(labels, run_b, run_a)
    assert reverse["difference"] == pytest.approx(-(20 / 90) / 3, abs=1e-12)
    assert reverse["high"] < 0 and reverse["p_value"] < 0.01
    assert "(B lower by 7.4 BA points)" in verdict(reverse, reverse["p_value"], "A", "B")


def test_runs_differing_by_one_sample_are_indistinguishable(labels):
    run_a, run_b = make_run(labels, severe_right=45), make_run(labels, severe_right=46)
    diff = paired_difference(labels, run_a, run_b)
    assert diff["p_value"] > 0.5
    assert diff["low"] <= 0 <= diff["high"]
    assert verdict(diff, diff["p_value"], "A", "B") == INDISTINGUISHABLE


def test_permutation_p_value_equals_exact_mcnemar_on_few_discordant_rows(labels):
    # 12 discordant Severe rows (all weight 1/270): B right on 9, A right on 3. With 2^12 <= n_perm swaps
    # scipy enumerates them all, and the sign-flip test is the exact two-sided McNemar (binomial) test.
    run_a = make_run(labels, severe_right=45)
    run_b = run_a.copy()
    severe = np.flatnonzero(labels == 2)
    run_b[severe[45:54]] = 2  # B right where A is wrong
    run_b[severe[:3]] = 1  # B wrong where A is right
    diff = paired_difference(labels, run_a, run_b, n_perm=5000)
    assert diff["n_discordant"] == 12
    assert diff["p_value"] == pytest.approx(binomtest(9, 12, 0.5).pvalue, rel=1e-9)


def test_bootstrap_interval_contains_estimate_and_matches_binomial_width():
    widths = {}
    for scale in (1, 10):
        labels = make_labels(scale)
        ba = recall_intervals(labels, make_run(labels, scale=scale))["balanced_accuracy"]
        assert ba["low"] < ba["estimate"] < ba["high"]
        widths[scale] = ba["high"] - ba["low"]
        # a class-stratified bootstrap of BA has SD sqrt(sum r(1-r)/n_k)/3 (recalls 0.9, 0.5, 0.5)
        sd = np.sqrt(sum(r * (1 - r) / (n * scale) for r, n in zip((0.9, 0.5, 0.5), CLASS_SIZES))) / 3
        assert widths[scale] == pytest.approx(2 * 1.96 * sd, rel=0.15)
    assert widths[10] < widths[1] / 2.5  # sqrt(10) narrower in theory


def test_class_recall_intervals_stay_within_each_class(labels):
    intervals = recall_intervals(labels, make_run(labels, severe_right=90))
    # every Severe sample right: a stratified bootstrap can only draw right Severe samples (zero width, kept as
    # bootstrap_low/high); Jeffreys' interval still says how low a recall 90/90 is compatible with
    severe = intervals["recall/severe"]
    assert (severe["bootstrap_low"], severe["bootstrap_high"]) == (1.0, 1.0)
    assert severe["estimate"] == severe["high"] == 1.0
    assert severe["low"] == pytest.approx(beta.ppf(0.025, 90.5, 0.5), abs=1e-12)
    assert intervals["recall/moderate"]["low"] < 0.5 < intervals["recall/moderate"]["high"]


def test_recall_interval_is_jeffreys_and_covers_on_six_samples():
    # Jeffreys: Beta(x + 1/2, n - x + 1/2) quantiles, 0 at x = 0 and 1 at x = n
    assert jeffreys_interval(0, 6) == (0.0, pytest.approx(beta.ppf(0.975, 0.5, 6.5)))
    assert jeffreys_interval(3, 6) == pytest.approx((beta.ppf(0.025, 3.5, 3.5), beta.ppf(0.975, 3.5, 3.5)))
    assert jeffreys_interval(0, 0) == (0.0, 0.0)  # an absent class: recall 0, as the metrics count it
    # exact coverage on 6 samples (the demo's Severe), averaged over true recalls 0.05-0.95: about 95%,
    # where the class-stratified percentile bootstrap (Binomial(6, x/6) / 6 percentiles) covers about 70%
    grid = np.linspace(0.05, 0.95, 181)
    x = np.arange(7)
    jeffreys = np.array([jeffreys_interval(k, 6) for k in x])
    percentile = np.column_stack([binom.ppf(0.025, 6, x / 6), binom.ppf(0.975, 6, x / 6)]) / 6
    cover = lambda bounds: np.mean([binom.pmf(x, 6, p)[(bounds[:, 0] <= p) & (p <= bounds[:, 1])].sum()
                                    for p in grid])
    assert 0.94 <= cover(jeffreys) <= 0.97
    assert cover(percentile) < 0.8


def test_ba_interval_combines_the_recall_intervals(labels):
    # MOVER: BA ± sqrt(Σ (recall - bound)²) / 3 from the three Jeffreys intervals
    intervals = recall_intervals(labels, make_run(labels), n_boot=200)
    parts = [intervals[f"recall/{c}"] for c in ("normal_mild", "moderate", "severe")]
    ba = intervals["balanced_accuracy"]
    assert ba["low"] == pytest.approx(ba["estimate"] - np.sqrt(sum((p["estimate"] - p["low"]) ** 2
                                                                     for p in parts)) / 3)
    assert ba["high"] == pytest.approx(ba["estimate"] + np.sqrt(sum((p["high"] - p["estimate"]) ** 2
                                                                      for p in parts)) / 3)
    assert ba["bootstrap_low"] < ba["estimate"] < ba["bootstrap_high"]


def test_pooled_seeds_that_disagree_count_between_samples_and_rows(labels):
    # 3 seeds that disagree on Severe: the pooled recall's interval is narrower than one seed's count of samples
    # would give and wider than if every row were an independent sample
    runs = [make_run(labels, severe_right=s) for s in (40, 45, 50)]
    rows = np.concatenate([labels] * 3)
    preds = np.concatenate(runs)
    clusters = np.tile(np.arange(len(labels)), 3)
    pooled_severe = recall_intervals(rows, preds, n_boot=200, clusters=clusters)["recall/severe"]
    hits = float((preds[rows == 2] == 2).sum())
    as_rows, as_samples = jeffreys_interval(hits, 270), jeffreys_interval(hits / 3, 90)
    width = pooled_severe["high"] - pooled_severe["low"]
    assert as_rows[1] - as_rows[0] <= width + 1e-12 and width <= as_samples[1] - as_samples[0] + 1e-12


def test_holm_on_a_hand_example():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6, 0.001]) == pytest.approx([1.0, 1.0, 0.003])
    assert holm([0.02]) == pytest.approx([0.02])
    assert holm([]) == []


def test_verdict_needs_p_value_and_interval_to_agree():
    interval_over_zero = {"difference": 0.02, "low": -0.001, "high": 0.04}
    assert verdict(interval_over_zero, 0.001, "A", "B") == INDISTINGUISHABLE
    interval_above_zero = {"difference": 0.02, "low": 0.001, "high": 0.04}
    assert verdict(interval_above_zero, 0.2, "A", "B") == INDISTINGUISHABLE
    assert "these two trained models differ" in verdict(interval_above_zero, 0.049, "A", "B")
    assert "(3 runs each)" in verdict(interval_above_zero, 0.049, "A", "B", runs=3)


def test_fixed_seed_is_deterministic_and_seed_matters(labels):
    run_a, run_b = make_run(labels, severe_right=45), make_run(labels, severe_right=55)
    assert paired_difference(labels, run_a, run_b, seed=3) == paired_difference(labels, run_a, run_b, seed=3)
    assert recall_intervals(labels, run_a, seed=3) == recall_intervals(labels, run_a, seed=3)
    assert recall_intervals(labels, run_a, seed=3) != recall_intervals(labels, run_a, seed=4)


def frame(labels: np.ndarray, preds: np.ndarray, seed: int, fold: int = 0) -> pd.DataFrame:
    """One run's rows, samples identified as 5 levels per study."""
    n = len(labels)
    return pd.DataFrame({"fold": fold, "seed": seed, "study_id": np.arange(n) // 5, "level": np.arange(n) % 5,
                         "label": labels, "pred": preds})


def test_pooled_runs_mean_spread_and_pairing(labels):
    a_runs = [make_run(labels, severe_right=s) for s in (40, 45, 50)]
    b_runs = [make_run(labels, severe_right=s) for s in (60, 65)]  # one run fewer: seed 2 of A stays unpaired
    runs_a = pd.concat([frame(labels, p, seed) for seed, p in enumerate(a_runs)])
    runs_b = pd.concat([frame(labels, p, seed) for seed, p in enumerate(b_runs)])
    result = pooled(runs_a, runs_b, n_boot=500, n_perm=2000)

    a_ba = [balanced_accuracy_score(labels, p) for p in a_runs]
    assert result["a"]["n_runs"] == 3 and result["b"]["n_runs"] == 2
    assert result["a"]["run_ba"] == pytest.approx(a_ba)
    assert result["a"]["mean_ba"] == pytest.approx(np.mean(a_ba))
    assert result["a"]["std_ba"] == pytest.approx(np.std(a_ba, ddof=1))
    assert result["n_paired_runs"] == 2
    # pairs: (40 vs 60) and (45 vs 65): B right on 20 more Severe rows out of 180 pooled Severe rows
    diff = result["difference"]
    assert diff["difference"] == pytest.approx((40 / 180) / 3, abs=1e-12)
    assert diff["low"] > 0 and diff["p_value"] < 0.01


def test_pooled_seeds_on_one_fold_are_not_more_data(labels):
    # three identical seeds resample as one sample each: the same interval as the single run
    preds = make_run(labels)
    runs = pd.concat([frame(labels, preds, seed) for seed in range(3)])
    single = recall_intervals(labels, preds, n_boot=500)
    result = pooled(runs, runs, n_boot=500, n_perm=2000)
    assert result["a"]["std_ba"] == 0.0
    for name, interval in single.items():
        assert result["a"]["intervals"][name] == pytest.approx(interval, abs=1e-12)
    assert result["difference"]["p_value"] == 1.0


def test_pooled_seeds_are_swapped_together_in_the_permutation_test(labels):
    # three identical seeds of a pair that differs on 6 Severe samples, all for B: 18 discordant rows but 6
    # discordant samples. Swapping the samples (all their rows together) gives the exact 2 / 2^6; swapping rows
    # one by one would count 18 independent swaps and a p near 1e-4.
    run_a = make_run(labels, severe_right=45)
    run_b = make_run(labels, severe_right=51)
    runs_a = pd.concat([frame(labels, run_a, seed) for seed in range(3)])
    runs_b = pd.concat([frame(labels, run_b, seed) for seed in range(3)])
    diff = pooled(runs_a, runs_b, n_boot=200, n_perm=5000)["difference"]
    assert diff["n_discordant"] == 18 and diff["n_discordant_units"] == 6
    assert diff["p_value"] == pytest.approx(2 / 2 ** 6, rel=1e-12)
    rows = paired_difference(np.concatenate([labels] * 3), np.concatenate([run_a] * 3),
                             np.concatenate([run_b] * 3), n_boot=200, n_perm=5000)
    assert rows["n_discordant_units"] == 18 and rows["p_value"] < 1e-3


def test_pooled_rejects_disagreeing_labels(labels):
    preds = make_run(labels)
    other = labels.copy()
    other[0] = 2
    with pytest.raises(ValueError, match="labels"):
        pooled(frame(labels, preds, 0), frame(other, preds, 0), n_boot=50, n_perm=100)
