"""What `harness ablate` was asked, checked before anything heavy is imported: the variants, the factors,
the path, the folds and seeds, and every arm's config (each a mix that `harness run` would accept)."""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.ablation.paths import AblationPlan, plan_ablation
from harness.core.cells import parse_folds, parse_seeds
from harness.core.registry import get_variant
from harness.core.run_config import build_config, default_profile


@dataclass
class AblateArgs:
    """What `harness ablate` was asked (the CLI's arguments, parsed)."""

    a: str
    b: str
    factors: tuple[str, ...] | None = None
    path: str = "both"
    fold: str = "0"
    seed: str | None = None
    seeds: int | None = None
    data_dir: str | None = None
    profile: str | None = None
    config: str | None = None
    sets: dict = field(default_factory=dict)
    dry_run: bool = False


def check(args: AblateArgs) -> tuple[AblationPlan, list[tuple[int, int]], str]:
    """The plan, the (fold, seed) cells and the profile, every arm's config checked: no data, no torch."""
    plan = plan_ablation(args.a, args.b, args.factors, args.path)
    profile = args.profile or default_profile(args.data_dir)
    base = build_config(get_variant(args.a), 0, profile, args.config, args.sets, args.data_dir)
    folds = parse_folds(args.fold, base.data.num_folds)
    seeds = parse_seeds(args.seed, args.seeds, base.train.seed)
    cells = [(f, s) for f in folds for s in seeds]
    for arm in plan.arms:
        for fold, seed in cells:
            build_config(get_variant(arm.variant), fold, profile, args.config, args.sets | {"train.seed": seed},
                         args.data_dir)
    return plan, cells, profile
