"""The arms of each ablation path, and the statistics that share out BA(B) - BA(A), tested by simulation."""
from __future__ import annotations

import numpy as np
import pytest

from harness.ablation.effects import both, greedy, greedy_choice, shapley, shapley_weights
from harness.ablation.paths import arm_variant, greedy_step, plan_ablation
from harness.compare.contrasts import contrast
from harness.compare.simulation import simulate
from harness.compare.version_cells import DEMO_FOLD_COUNTS
from harness.compare.versions import compare_versions
from harness.core.errors import UsageError


def test_both_has_a_leave_one_in_and_a_leave_one_out_arm_per_factor():
    plan = plan_ablation("v4", "v9", None, "both")
    assert len(plan.groups) == 9 and len(plan.arms) == 2 + 2 * 9
    arms = {a.variant: a for a in plan.arms}
    assert arms["v4"].role == "A" and arms["v9"].role == "B"
    assert arms["v4+v9:loss"].role == "leave-one-in" and arms["v4+v9:loss"].group == "loss"
    # B minus one factor is `harness run B --take A:f`
    assert arms["v9+v4:loss"].role == "leave-one-out" and arms["v9+v4:loss"].taken == plan.every - {"loss"}


def test_two_factors_share_arms_and_the_rest_is_one_factor():
    plan = plan_ablation("v4", "v10", ("loss",), "both")
    assert [(g.label, g.factors) for g in plan.groups] == [("loss", ("loss",)),
                                                          ("rest", ("augmentation", "optimiser"))]
    # A + loss is B - rest, and B - loss is A + rest: four arms, not six
    assert [a.variant for a in plan.arms] == ["v4", "v10", "v4+v10:loss", "v10+v4:loss"]


def test_greedy_knows_its_first_step_and_bounds_the_rest():
    plan = plan_ablation("v4", "v10", None, "greedy")
    assert [a.variant for a in plan.arms] == ["v4", "v4+v10:augmentation", "v4+v10:loss", "v4+v10:optimiser"]
    assert plan.max_arms() == 1 + 3 + 2 + 1
    second = greedy_step(plan, frozenset({"loss"}), 2)
    assert [a.variant for a in second] == ["v10+v4:optimiser", "v10+v4:augmentation"]
    assert [a.variant for a in greedy_step(plan, frozenset({"loss", "augmentation"}), 3)] == ["v10"]


def test_shapley_trains_every_mix_once_and_caps_the_factors():
    plan = plan_ablation("v4", "v9", ("loss", "sampling"), "shapley")
    assert [g.label for g in plan.groups] == ["loss", "sampling", "rest"]
    assert len(plan.arms) == 8 and len({a.taken for a in plan.arms}) == 8
    with pytest.raises(UsageError, match="9 factors would be 512 mixes"):
        plan_ablation("v4", "v9", None, "shapley")


def test_coupled_factors_are_merged_and_said_so():
    plan = plan_ablation("v9", "v6", None, "both")
    labels = [g.label for g in plan.groups]
    assert "loss+model" in labels and "loss" not in labels and "model" not in labels
    assert any("ordinal" in note for note in plan.notes)


@pytest.mark.parametrize("args,words", [
    (("v4", "v10", ("pixels",), "both"), "v4 and v10 have the same pixels"),
    (("v4", "v4", None, "both"), "name two different variants"),
    (("v4", "v9", None, "sideways"), "--path 'sideways' is not one of both, greedy, shapley"),
    (("v4+v9:loss", "v9", None, "both"), "not mixes"),
])
def test_plan_refusals(args, words):
    with pytest.raises(UsageError, match=words):
        plan_ablation(*args)


def test_arm_variants_are_canonical():
    every = frozenset({"pixels", "loss", "model"})
    assert arm_variant("a", "b", frozenset(), every) == "a"
    assert arm_variant("a", "b", every, every) == "b"
    assert arm_variant("a", "b", frozenset({"loss"}), every) == "a+b:loss"
    assert arm_variant("a", "b", frozenset({"loss", "pixels"}), every) == "b+a:model"


def test_a_two_arm_contrast_is_compare_versions_test():
    a, b = simulate(np.random.default_rng(3), class_counts=DEMO_FOLD_COUNTS, n_folds=5, n_seeds=2, difference=0.05)
    ours, theirs = contrast({"a": a, "b": b}, {"a": -1, "b": 1}), compare_versions(a, b)
    for k in ("low", "high", "p_value", "se", "mdd"):
        assert ours[k] == pytest.approx(theirs[k])
    assert ours["estimate"] == pytest.approx(theirs["difference"])


# ------------------------------------------------------------------------------------------------ simulation
# Arms of a two-factor ablation from the calibration model, with planted factor effects on every class's recall:
# BA(S) = base + Σ_{f in S} effect_f (+ interaction when both are taken). Truth known, the statistics tested.

def _arms(rng, effects: dict[str, float], interaction: float = 0.0, n_folds: int = 5, n_seeds: int = 1):
    plan = plan_ablation("v4", "v10", ("loss",), "shapley")  # groups: loss, rest; four arms
    arms = {}
    for arm in plan.arms:
        shift = sum(effects[g.label] for g in plan.groups if set(g.factors) <= arm.taken)
        if len(arm.taken) == len(plan.every):
            shift += interaction
        _, cells = simulate(rng, class_counts=tuple(4 * c for c in DEMO_FOLD_COUNTS), n_folds=n_folds,
                            n_seeds=n_seeds, difference=shift)
        arms[arm.variant] = cells
    return plan, arms


def test_shapley_values_add_up_to_the_total_and_find_the_planted_factor():
    plan, arms = _arms(np.random.default_rng(0), {"loss": -0.20, "rest": 0.0}, n_seeds=2)
    rows = {r["factor"]: r for r in shapley(plan, arms, n_boot=500)}
    total = contrast(arms, {plan.a: -1, plan.b: 1}, n_boot=500)["estimate"]
    assert sum(r["shapley"]["estimate"] for r in rows.values()) == pytest.approx(total)
    assert rows["loss"]["verdict"] == "lowers BA" and rows["rest"]["verdict"].startswith("indistinguishable")
    weights = shapley_weights(plan, plan.groups[0])
    assert sum(w for w in weights.values() if w > 0) == pytest.approx(1.0) and sum(weights.values()) == pytest.approx(0)


def test_leave_one_in_and_out_agree_without_interaction_and_flag_one():
    plan, arms = _arms(np.random.default_rng(1), {"loss": -0.15, "rest": 0.0}, n_seeds=2)
    rows = {r["factor"]: r for r in both(plan, arms, n_boot=500)}
    assert rows["loss"]["verdict"].startswith("lowers BA both ways") and not rows["loss"]["interacts"]
    plan, arms = _arms(np.random.default_rng(2), {"loss": 0.0, "rest": 0.0}, interaction=-0.25, n_seeds=2)
    rows = {r["factor"]: r for r in both(plan, arms, n_boot=500)}
    assert rows["loss"]["interacts"] and rows["rest"]["interacts"]  # each matters only with the other


def test_the_interaction_test_holds_its_level_under_additivity():
    """Additive effects (no interaction): the four-arm gap contrast says 'interacts' at about 5% at most."""
    rng = np.random.default_rng(7)
    hits = 0
    reps = 120
    for _ in range(reps):
        plan, arms = _arms(rng, {"loss": -0.05, "rest": 0.03}, n_seeds=2)
        a, loi, loo, b = plan.a, "v4+v10:loss", "v10+v4:loss", plan.b
        gap = contrast(arms, {loi: 1, a: -1, b: -1, loo: 1}, n_boot=200)
        hits += gap["significant"]
    # 5% plus three binomial standard errors at 120 replications
    assert hits / reps <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps)


def test_greedy_picks_the_best_candidate_first():
    plan = plan_ablation("v4", "v10", ("loss",), "greedy")
    _, arms = _arms(np.random.default_rng(4), {"loss": 0.10, "rest": -0.10}, n_seeds=2)
    first = greedy_step(plan, frozenset(), 1)
    chosen = greedy_choice(plan, arms, first)
    assert chosen.group == "loss"
    last = greedy_step(plan, chosen.taken, 2)
    rows = greedy(plan, arms, [(plan.arm(frozenset(), "A"), chosen, first), (chosen, last[0], last)], n_boot=300)
    assert [r["factor"] for r in rows] == ["loss", "rest"]
    total = contrast(arms, {plan.a: -1, plan.b: 1}, n_boot=300)["estimate"]
    assert sum(r["gain"]["estimate"] for r in rows) == pytest.approx(total)


@pytest.mark.parametrize("args,words", [
    (["v4", "v9", "--factors", "lose"], "--factors: unknown factor 'lose' (did you mean loss?)"),
    (["v4", "v9", "--path", "shapley"], "--path shapley: 9 factors would be 512 mixes"),
    (["v4", "v10", "--factors", "pixels"], "--factors: v4 and v10 have the same pixels"),
    (["v4", "v9", "--fold", "7"], "--fold 7: fold must be within 0-4"),
    (["v4", "v9", "--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
    (["v4", "v99"], "unknown variant 'v99'"),
])
def test_ablate_refusals_are_one_line_and_leave_nothing(workdir, args, words):
    from tests.conftest import harness_cli

    res = harness_cli("ablate", *args, cwd=workdir)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and words in res.stderr, res.stderr
    assert not (workdir / "mlruns").exists() and not (workdir / ".harness").exists()
