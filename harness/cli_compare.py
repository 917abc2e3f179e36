"""`harness compare`: arguments checked before anything heavy, --plan, --run-missing and the report.

    harness compare v4 v9                       # fold 0, every seed both have
    harness compare v4 v9 --fold all            # every (fold, seed) cell both have: version level
    harness compare v4 v9 --fold all --seeds 3 --plan         # what 5 x 3 cells can resolve, before training
    harness compare v4 v9 --fold all --seeds 3 --run-missing  # train the cells that are missing, then compare
"""
from __future__ import annotations

import json
import os

from rich.console import Console

from harness.core.errors import UsageError


def check_compare_arguments(args) -> list[int]:
    """Names, duplicates, the baseline, folds and --run-missing's config, before MLflow is imported.
    Returns the folds to compare."""
    from harness.core.cells import parse_folds
    from harness.core.overrides import parse_set
    from harness.core.registry import get_variant
    from harness.core.run_config import build_config, default_profile

    if not args.variants and not args.runs:
        raise UsageError("compare: name at least two variants (e.g. v4 v8 v9) or --runs RUN_ID ...")
    # an unknown name is a one-line error before anything is read; a mix's factors take their declared order
    args.variants = [get_variant(name).name for name in args.variants]
    if args.baseline:
        args.baseline = get_variant(args.baseline).name
    twice = sorted({v for v in args.variants if args.variants.count(v) > 1})
    if twice:
        raise UsageError(f"compare: {', '.join(twice)} named twice; name each variant once (two runs of one "
                         "variant: --runs RUN_ID RUN_ID)")
    if len(args.variants) == 1 and not args.runs:
        raise UsageError(f"compare: {args.variants[0]} alone; name at least two variants")
    if args.baseline and args.variants and args.baseline not in args.variants:
        raise UsageError(f"--baseline {args.baseline}: not among the compared variants ({', '.join(args.variants)})")
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    if (args.plan or args.run_missing) and args.runs:
        raise UsageError("--plan and --run-missing work on variants, not on --runs")
    sets, profile = parse_set(args.set), args.profile or default_profile(args.data_dir)
    configs = [build_config(get_variant(name), 0, profile, None, sets, args.data_dir) for name in args.variants]
    folds = parse_folds(args.fold, configs[0].data.num_folds if configs else 5)
    if args.run_missing:
        for name in args.variants:
            for fold in folds:
                build_config(get_variant(name), fold, profile, None, sets, args.data_dir)
    return folds


def _cells(args, variant: str, folds: list[int]) -> list[tuple[int, int]]:
    """The (fold, seed) cells --run-missing trains and --plan plans for: --seeds counts up from train.seed."""
    from harness.core.overrides import parse_set
    from harness.core.registry import get_variant
    from harness.core.run_config import build_config, default_profile

    profile = args.profile or default_profile(args.data_dir)
    base = build_config(get_variant(variant), folds[0], profile, None, parse_set(args.set), args.data_dir)
    return [(f, base.train.seed + i) for f in folds for i in range(args.seeds or 1)]


def train_missing(args, folds: list[int], runs: dict, out: Console) -> None:
    """Train each variant's missing cells: one run, or a matrix (which skips the cells already FINISHED)."""
    from harness.core.overrides import parse_set
    from harness.training.execute import execute
    from harness.training.matrix import run_matrix
    from harness.training.plan import describe, prepare

    for name in args.variants:
        cells = _cells(args, name, folds)
        have = {(r.fold, int(r.seed)) for r in runs.get(name, []) if str(r.seed).lstrip("-").isdigit()}
        if set(cells) <= have:
            continue
        out.print(f"[bold]--run-missing:[/] training {name} ({len(set(cells) - have)} of {len(cells)} cells missing)")
        sets = parse_set(args.set)
        if len(cells) > 1:
            run_matrix(name, cells, args.data_dir, args.profile, None, sets, out)
            continue
        (fold, seed), = cells
        plan = prepare(name, fold, args.data_dir, args.profile, None, sets | {"train.seed": seed}, out)
        describe(plan, out)
        execute(plan, out)


def print_plan(args, folds: list[int], console: Console) -> int:
    """What folds x seeds cells per variant can resolve, before anything trains (harness.compare.planning):
    class counts from the first fold's validation samples, the seed spread observed on the baseline's
    finished cells when it has two or more on a fold, else the default assumption."""
    from harness.compare import versions
    from harness.compare.runs import find_runs, predictions_frame
    from harness.core.overrides import parse_set
    from harness.tracking import store
    from harness.training.plan import prepare

    baseline = args.baseline or args.variants[0]
    quiet = Console(quiet=True)
    plan = prepare(baseline, folds[0], args.data_dir, args.profile, None, parse_set(args.set), quiet)
    counts = [int((plan.val_samples["label"] == k).sum()) for k in range(3)]
    seeds = args.seeds or 1
    assumption = {}
    store.ensure_store()
    runs = find_runs([baseline], folds, []).get(baseline, [])
    if len(runs) > 1:
        budget = versions.variance_budget(versions.cells_from_frame(predictions_frame(runs)))
        if budget["training_sd"] == budget["training_sd"]:  # not NaN: some fold has two seeds
            assumption = {"training_sd": budget["training_sd"]}
            seen = (f"seed SD {100 * budget['seed_sd']:.1f} points, {100 * budget['training_sd']:.1f} of it beyond "
                    "sample noise")
    where = (f"{baseline}'s {len(runs)} finished cells ({seen})"
             if assumption else "an assumed training SD of 3 recall points per class (no two seeds of "
             f"{baseline} on one fold yet)")
    console.print(f"plan for {len(folds)} fold(s) x {seeds} seed(s) per variant, from fold {folds[0]}'s validation "
                  f"counts {'/'.join(map(str, counts))} (N/M/S) and {where}:", soft_wrap=False)
    result = versions.plan(counts, n_folds=len(folds), n_seeds=seeds, **assumption)
    for line in versions.plan_lines(result):
        console.print(f"- {line}", soft_wrap=False, markup=False)
    return 0


def cmd_compare(args, console: Console) -> int:
    folds = check_compare_arguments(args)
    if args.plan:
        return print_plan(args, folds, console)
    from pathlib import Path

    from harness.compare.comparison import compare
    from harness.compare.report import log_comparison_run, print_report, write_files
    from harness.compare.runs import find_runs
    from harness.tracking import store

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per artifact is noise
    out = Console(stderr=True) if args.json else console  # keep stdout for the JSON
    uri = store.ensure_store()
    runs = find_runs(args.variants, folds, args.runs)
    if args.run_missing:
        train_missing(args, folds, runs, out)
        runs = find_runs(args.variants, folds, args.runs)
    missing = [v for v in args.variants if v not in runs]
    if missing:
        where = f"fold {folds[0]}" if len(folds) == 1 else f"folds {args.fold}"
        raise UsageError(f"no finished run of {', '.join(missing)} for {where} "
                         f"(train it with `harness run {missing[0]} --fold {args.fold}`, or add --run-missing)")
    order = args.variants or list(runs)
    if len(order) < 2:
        raise UsageError("compare needs at least two variants")
    baseline = args.baseline or order[0]
    if baseline not in runs:
        raise UsageError(f"--baseline {baseline}: not among the compared variants ({', '.join(order)})")
    report = compare(runs, [baseline] + [v for v in order if v != baseline], baseline, seed=args.seed)
    report["comparison_run"] = log_comparison_run(report, runs)
    if args.output:
        files = write_files(report, runs, Path(args.output))
        out.print(f"wrote {len(files)} files to {args.output}")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, console)
        console.print(f"comparison run {report['comparison_run']} (harness.kind=comparison) in {uri}")
    return 0
