"""`harness diff A B` and `harness ablate A B`: what two variants differ in, factor by factor, and which of
those differences made the difference in BA (harness.core.factors, harness.ablation)."""
from __future__ import annotations

import argparse
import json

from rich.console import Console

MEANING_WIDTH = 90  # the terminal shows the start of each key's doc; --json has all of it


def add_parsers(sub) -> None:
    diff = sub.add_parser("diff", help="the config difference between two variants, grouped into named factors")
    diff.add_argument("a", help="variant, e.g. v4")
    diff.add_argument("b", help="variant, e.g. v9")
    diff.add_argument("--json", action="store_true", help="one JSON object on stdout")

    abl = sub.add_parser("ablate", help="which factors make the BA difference between two variants: mixes of the "
                                        "two trained as run matrices, each factor's effect with its interval")
    abl.add_argument("a", help="the variant the path starts from, e.g. v4")
    abl.add_argument("b", help="the variant it ends at, e.g. v9")
    abl.add_argument("--factors", metavar="F1,F2,...",
                     help="the factors to analyse (`harness diff A B` lists them); the other differences stay "
                          "together as one factor, 'rest' (default: every factor that differs)")
    abl.add_argument("--path", default="both", choices=("both", "greedy", "shapley"),
                     help="both (default): leave-one-in and leave-one-out per factor; greedy: from A, each step "
                          "flips the factor that gains most; shapley: exact Shapley values over all 2^k mixes (k <= 4)")
    abl.add_argument("--fold", default="0", metavar="FOLD|LIST|all", help="folds of every arm (default 0)")
    abl.add_argument("--seed", metavar="N|LIST", help="training seeds of every arm (default the variant's)")
    abl.add_argument("--seeds", type=int, metavar="N", help="N seeds per fold, counting up from train.seed")
    abl.add_argument("--data-dir", help="dataset root (default $RSNA_DATA_DIR, else the demo)")
    abl.add_argument("--profile", help="smoke or full (default: smoke on the demo data, full on real data)")
    abl.add_argument("--config", help="YAML file of config overrides for every arm")
    abl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="config override for every arm, as in `harness run`; repeatable")
    abl.add_argument("--dry-run", action="store_true",
                     help="print the arms, the number of runs and an estimated time, and train nothing")


def cmd_diff(args, console: Console) -> int:
    from harness.core import factors
    from harness.core.registry import get_variant

    a, b = get_variant(args.a), get_variant(args.b)
    result = factors.as_dict(a, b)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    changed = [f["name"] for f in result["factors"]]
    console.print(f"[bold]{a.name} -> {b.name}[/]: {len(changed)} of {len(factors.NAMES)} factors differ"
                  + (f" (the same: {', '.join(result['unchanged'])})" if result["unchanged"] else ""), highlight=False)
    for f in result["factors"]:
        detail = f["title"].partition(": ")[2]
        console.print(f"\n[bold]{f['name']}[/]" + (f" ({detail})" if detail else ""), highlight=False)
        _rows(f["changes"], a.name, b.name, console)
    if result["setup"]:
        console.print("\n[bold]setup[/]  not a factor (never taken from the other variant)", highlight=False)
        _rows(result["setup"], a.name, b.name, console)
    if changed:
        console.print(f"\n`harness run {a.name} --take {b.name}:{changed[0]}` trains {a.name} with {b.name}'s "
                      f"{changed[0]}; `harness ablate {a.name} {b.name} --dry-run` plans which factor does what",
                      highlight=False, markup=False)
    return 0


def _rows(changes: list[dict], a: str, b: str, console: Console) -> None:
    """Each key on a line, `a-value -> b-value`, and the start of what it means under it."""
    width = max(len(c["key"]) for c in changes)
    for c in changes:
        console.print(f"  {c['key']:<{width}}  {_text(c['a'])} -> {_text(c['b'])}", highlight=False, markup=False)
        doc = c["doc"] if len(c["doc"]) <= MEANING_WIDTH else c["doc"][:MEANING_WIDTH - 3].rstrip() + "..."
        console.print(f"  {'':<{width}}  {doc}", style="dim", highlight=False, markup=False)
        if "coupled" in c:
            console.print(f"  {'':<{width}}  coupled: {c['coupled']}", style="dim", highlight=False, markup=False)


def _text(value) -> str:
    return "None" if value is None else (", ".join(map(str, value)) if isinstance(value, list) else str(value))


def ablate_arguments(args: argparse.Namespace):
    """The parsed arguments as harness.ablation.args.AblateArgs, checked (no data, no torch)."""
    from harness.ablation.args import AblateArgs, check
    from harness.core.factors import parse_factors
    from harness.core.overrides import parse_set

    factors = parse_factors(args.factors, "--factors") if args.factors else None
    ablate = AblateArgs(args.a, args.b, factors, args.path, args.fold, args.seed, args.seeds, args.data_dir,
                        args.profile, args.config, parse_set(args.set), args.dry_run)
    check(ablate)
    return ablate


def cmd_ablate(args, console: Console) -> int:
    ablate = ablate_arguments(args)
    from harness.ablation.run import ablate as run_ablation

    return run_ablation(ablate, console)
