"""Each factor's effect on BA, with the version-level interval and verdict of harness.compare.contrasts.

Input: the arms' cells {variant: {(fold, seed): (labels, predictions)}}. Effects are in BA units, B's side
positive: a factor with effect -0.12 lowers BA by 12 points when it is taken from B.
- both: leave-one-in BA(A+f) - BA(A) and leave-one-out BA(B) - BA(B-f), each Holm-adjusted across the
  factors; the factor interacts when the two differ beyond noise (the four-arm contrast of their gap);
- greedy: each step's gain BA(S+f) - BA(S); the steps add up to BA(B) - BA(A);
- shapley: exact Shapley values, Σ_S |S|!(k-|S|-1)!/k! (BA(S+f) - BA(S)); they add up to BA(B) - BA(A).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from harness.ablation.paths import AblationPlan, Group, subsets
from harness.compare.contrasts import contrast
from harness.compare.stats import holm
from harness.compare.version_cells import Cells, balanced_accuracy


def mean_ba(cells: Cells, shared: set | None = None) -> float:
    """Mean BA over an arm's cells (only the (fold, seed) cells in `shared`, when given)."""
    values = [balanced_accuracy(labels, preds) for cell, (labels, preds) in cells.items()
              if shared is None or cell in shared]
    return float(np.mean(values)) if values else float("nan")


def shared_cells(arms: Mapping[str, Cells]) -> set:
    cells = [set(c) for c in arms.values()]
    return set.intersection(*cells) if cells else set()


def _pts(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.1f}"


def effect_text(result: dict) -> str:
    """'-12.3 [-20.1, -4.5]' in BA points."""
    return f"{_pts(result['estimate'])} [{_pts(result['low'])}, {_pts(result['high'])}]"


def _words(result: dict, p: float) -> str:
    significant = p < result["alpha"] and (result["low"] > 0 or result["high"] < 0)
    if significant:
        return "raises BA" if result["estimate"] > 0 else "lowers BA"
    return f"indistinguishable (MDD {100 * result['mdd']:.1f} points)"


def _holm(results: list[dict]) -> None:
    for result, p in zip(results, holm([r["p_value"] for r in results])):
        result["p_holm"] = p
        result["words"] = _words(result, p)


def _arm(plan: AblationPlan, taken) -> str:
    return plan.arm(frozenset(taken)).variant


def both(plan: AblationPlan, arms: Mapping[str, Cells], **kw) -> list[dict]:
    """One row per factor: leave-one-in, leave-one-out, their gap, and a verdict."""
    every, a, b = plan.every, plan.a, plan.b
    rows = []
    for g in plan.groups:
        loi, loo = _arm(plan, g.factors), _arm(plan, every - set(g.factors))
        rows.append({"factor": g.label, "factors": list(g.factors),
                     "arms": {"a": a, "a_plus": loi, "b_minus": loo, "b": b},
                     "leave_one_in": contrast(arms, {a: -1.0, loi: 1.0}, **kw),
                     "leave_one_out": contrast(arms, {loo: -1.0, b: 1.0}, **kw),
                     # one factor: leave-one-in and leave-one-out are both B - A, and there is no gap
                     "gap": contrast(arms, _gap_weights(a, loi, loo, b), **kw) if len(plan.groups) > 1 else None})
    _holm([r["leave_one_in"] for r in rows])
    _holm([r["leave_one_out"] for r in rows])
    _holm([r["gap"] for r in rows if r["gap"]])
    for r in rows:
        gap = r["gap"]
        r["interacts"] = bool(gap) and gap["p_holm"] < gap["alpha"] and (gap["low"] > 0 or gap["high"] < 0)
        r["verdict"] = _both_verdict(r)
    return rows


def _gap_weights(a: str, loi: str, loo: str, b: str) -> dict[str, float]:
    """(BA(A+f) - BA(A)) - (BA(B) - BA(B-f)); with two factors A+f1 is B-f2, so weights add up per arm."""
    weights: dict[str, float] = {}
    for name, w in ((loi, 1.0), (a, -1.0), (b, -1.0), (loo, 1.0)):
        weights[name] = weights.get(name, 0.0) + w
    return weights


def _direction(result: dict) -> str:
    """'raises BA', 'lowers BA' or '' (indistinguishable), at the Holm-adjusted p."""
    return "" if result["words"].startswith("indist") else result["words"]


def _both_verdict(row: dict) -> str:
    loi, loo = row["leave_one_in"], row["leave_one_out"]
    up_in, up_out = _direction(loi), _direction(loo)
    if not up_in and not up_out:
        text = f"indistinguishable (MDD {100 * loi['mdd']:.1f} / {100 * loo['mdd']:.1f} points)"
    elif up_in == up_out:
        text = f"{up_in} both ways (added to A and taken from B)"
    elif not up_in:
        text = f"{up_out} taken from B; indistinguishable added to A"
    elif not up_out:
        text = f"{up_in} added to A; indistinguishable taken from B"
    else:
        text = f"{up_in} added to A, {up_out} taken from B"
    if row["interacts"]:
        text += f"; interacts with the other factors (the two estimates differ by {effect_text(row['gap'])} points)"
    return text


def shapley_weights(plan: AblationPlan, group: Group) -> dict[str, float]:
    """Each arm's weight in the group's exact Shapley value."""
    k = len(plan.groups)
    others = [g for g in plan.groups if g is not group]
    weights: dict[str, float] = {}
    for subset in subsets(others):
        size = sum(1 for g in others if set(g.factors) <= subset)
        c = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
        for taken, sign in ((subset | set(group.factors), 1.0), (subset, -1.0)):
            name = _arm(plan, taken)
            weights[name] = weights.get(name, 0.0) + sign * c
    return weights


def shapley(plan: AblationPlan, arms: Mapping[str, Cells], **kw) -> list[dict]:
    rows = [{"factor": g.label, "factors": list(g.factors), "shapley": contrast(arms, shapley_weights(plan, g), **kw)}
            for g in plan.groups]
    _holm([r["shapley"] for r in rows])
    for r in rows:
        r["verdict"] = r["shapley"]["words"]
    return rows


def greedy_choice(plan: AblationPlan, arms: Mapping[str, Cells], candidates: list) -> object:
    """The candidate arm with the highest mean BA over the cells all candidates share (ties: declared order)."""
    shared = shared_cells({c.variant: arms[c.variant] for c in candidates})
    return max(candidates, key=lambda c: mean_ba(arms[c.variant], shared))


def greedy(plan: AblationPlan, arms: Mapping[str, Cells], steps: list, **kw) -> list[dict]:
    """steps: [(previous arm, chosen arm, candidates)] as the run went; one row per step."""
    rows = []
    for i, (before, chosen, candidates) in enumerate(steps, 1):
        shared = shared_cells({c.variant: arms[c.variant] for c in candidates})
        rows.append({"step": i, "factor": chosen.group, "arms": {"before": before.variant, "after": chosen.variant},
                     "gain": contrast(arms, {before.variant: -1.0, chosen.variant: 1.0}, **kw),
                     "candidates": {c.group: mean_ba(arms[c.variant], shared) for c in candidates}})
    _holm([r["gain"] for r in rows])
    for r in rows:
        r["verdict"] = r["gain"]["words"]
    return rows


def total(plan: AblationPlan, arms: Mapping[str, Cells], **kw) -> dict:
    """BA(B) - BA(A) with its interval and verdict: what the factors share out."""
    result = contrast(arms, {plan.a: -1.0, plan.b: 1.0}, **kw)
    _holm([result])
    return result
