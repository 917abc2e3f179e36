"""Which mixes of A and B an ablation trains (its arms), for each path; no data, no torch.

The factors are the ones A and B differ in (harness.core.factors). `--factors f1,f2` analyses those and
keeps every other difference together as one more factor, `rest`, so every path still ends at B. Factors
that cannot be taken apart (v6's CORAL loss needs v6's ordinal head, harness.core.mixing) are merged into one,
and the plan says so.

An arm is the set of factors taken from B. Its variant is A when none is taken, B when all are, and
otherwise the mix with the fewer factors taken: A+B:S, or B+A:(the rest), so that "B minus one factor" is
`harness run B --take A:f` and a mix two paths share is one set of runs.
- `both`: leave-one-in (A plus one factor of B) and leave-one-out (B minus one factor) for each factor;
- `greedy` (Fawcett & Hoos 2016): from A, each step flips the remaining factor that gains most; the arms of
  step i are known only after step i-1 (`greedy_step`);
- `shapley`: every one of the 2^k mixes, for exact Shapley values (k <= 4).
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from harness.core.errors import UsageError
from harness.core.factors import NAMES, differences
from harness.core.mixing import MixError, mix_name
from harness.core.registry import get_variant

PATHS = ("both", "greedy", "shapley")
MAX_SHAPLEY = 4
REST = "rest"


@dataclass(frozen=True)
class Group:
    """One factor of the ablation: a factor, factors that only go together, or the rest."""

    label: str
    factors: tuple[str, ...]


@dataclass(frozen=True)
class Arm:
    """One mix of A and B: the factors taken from B, the variant that trains it, and its role."""

    taken: frozenset[str]
    variant: str
    role: str
    """'A', 'B', 'leave-one-in', 'leave-one-out', 'step N' or 'mix'."""
    group: str = ""
    """The group whose effect this arm measures ('' for A, B and Shapley's mixes)."""

    @property
    def factor_tag(self) -> str:
        """harness.factor: the factors taken from B (none for A)."""
        return ",".join(n for n in NAMES if n in self.taken) or "none"


@dataclass(frozen=True)
class AblationPlan:
    a: str
    b: str
    path: str
    groups: tuple[Group, ...]
    arms: tuple[Arm, ...]
    """Every arm known before training starts (for greedy: A and the first step's)."""
    notes: tuple[str, ...] = ()
    """Merges and the like, said before anything trains."""

    @property
    def every(self) -> frozenset[str]:
        return frozenset(f for g in self.groups for f in g.factors)

    def arm(self, taken: frozenset[str], role: str = "mix", group: str = "") -> Arm:
        return Arm(taken, arm_variant(self.a, self.b, taken, self.every), role, group)

    def max_arms(self) -> int:
        """Arms the path trains at most (greedy's later steps depend on what earlier ones measured)."""
        k = len(self.groups)
        return 1 + k * (k + 1) // 2 if self.path == "greedy" else len(self.arms)


def ordered(factors) -> tuple[str, ...]:
    return tuple(n for n in NAMES if n in factors)


def arm_variant(a: str, b: str, taken: frozenset[str], every: frozenset[str]) -> str:
    """The variant of the arm that takes `taken` from B: A, B, A+B:taken or B+A:(every - taken)."""
    if not taken:
        return a
    if taken == every:
        return b
    rest = every - taken
    return mix_name(a, b, ordered(taken)) if len(taken) <= len(rest) else mix_name(b, a, ordered(rest))


def plan_ablation(a: str, b: str, factors: tuple[str, ...] | None = None, path: str = "both") -> AblationPlan:
    """The groups and the arms known before training; every arm checked as `harness run` would."""
    if path not in PATHS:
        raise UsageError(f"--path {path!r} is not one of {', '.join(PATHS)}")
    va, vb = get_variant(a), get_variant(b)
    if va.parts or vb.parts:
        raise UsageError("ablate two registered variants, not mixes")
    if a == b:
        raise UsageError(f"ablate {a} {a}: name two different variants")
    changed = list(differences(va, vb)[0])
    if not changed:
        raise UsageError(f"{a} and {b} differ in no factor (`harness diff {a} {b}`): nothing to ablate")
    if factors:
        same = [f for f in factors if f not in changed]
        if same:
            raise UsageError(f"--factors: {a} and {b} have the same {', '.join(same)}; they differ in "
                             f"{', '.join(changed)}")
        groups = [Group(f, (f,)) for f in factors]
        rest = tuple(f for f in changed if f not in factors)
        if rest:
            groups.append(Group(REST, rest))
    else:
        groups = [Group(f, (f,)) for f in changed]
    groups, notes = _merge_coupled(a, b, groups, path)
    if path == "shapley" and len(groups) > MAX_SHAPLEY:
        raise UsageError(f"--path shapley: {len(groups)} factors would be {2 ** len(groups)} mixes; name at most "
                         f"{MAX_SHAPLEY - 1} with --factors (the other differences become one factor, '{REST}')")
    plan = AblationPlan(a, b, path, tuple(groups), (), tuple(notes))
    return dataclasses.replace(plan, arms=tuple(_arms(plan)))  # the arms' names need the groups first


def _arms(plan: AblationPlan) -> list[Arm]:
    every = plan.every
    out = {frozenset(): plan.arm(frozenset(), "A"), every: plan.arm(every, "B")}
    if plan.path == "both":
        for g in plan.groups:
            loi, loo = frozenset(g.factors), every - frozenset(g.factors)
            out.setdefault(loi, plan.arm(loi, "leave-one-in", g.label))
            out.setdefault(loo, plan.arm(loo, "leave-one-out", g.label))
    elif plan.path == "greedy":
        del out[every]  # reached by the last step
        for arm in greedy_step(plan, frozenset(), 1):
            out.setdefault(arm.taken, arm)
    else:
        for subset in subsets(plan.groups):
            out.setdefault(subset, plan.arm(subset))
    return list(out.values())


def subsets(groups) -> list[frozenset[str]]:
    """Every union of groups, smallest first."""
    return [frozenset(f for g in chosen for f in g.factors)
            for r in range(len(groups) + 1) for chosen in itertools.combinations(groups, r)]


def greedy_step(plan: AblationPlan, taken: frozenset[str], step: int) -> list[Arm]:
    """The candidates of a greedy step: what has been taken, plus each remaining group."""
    return [plan.arm(taken | frozenset(g.factors), f"step {step}", g.label)
            for g in plan.groups if not set(g.factors) & taken]


def _merge_coupled(a: str, b: str, groups: list[Group], path: str) -> tuple[list[Group], list[str]]:
    """Merge groups until every arm the path may visit is a mix that can train (harness.core.mixing)."""
    notes = []
    while True:
        every = frozenset(f for g in groups for f in g.factors)
        candidates = ([frozenset(g.factors) for g in groups] + [every - frozenset(g.factors) for g in groups]
                      if path == "both" else subsets(groups))
        failure = None
        for taken in candidates:
            try:
                get_variant(arm_variant(a, b, taken, every))
            except MixError as exc:
                failure = exc
                break
            except UsageError as exc:
                raise UsageError(f"ablate {a} {b}: an arm cannot train: {exc}") from None
        if failure is None:
            return groups, notes
        joined = [g for g in groups if set(g.factors) & set(failure.coupled)]
        if len(joined) < 2:
            raise UsageError(f"ablate {a} {b}: an arm cannot train: {failure}") from None
        merged = Group("+".join(g.label for g in joined), ordered({f for g in joined for f in g.factors}))
        notes.append(f"{' and '.join(g.label for g in joined)} are one factor here: {failure}")
        first = groups.index(joined[0])
        groups = [g for g in groups if g not in joined]
        groups.insert(first, merged)
