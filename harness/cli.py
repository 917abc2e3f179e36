"""The `harness` command: run, config, compare, diff, ablate, tune, variants, data, ui.

User mistakes (HarnessError) print one line and exit with their code; nothing else is caught, so a
real bug still shows its traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from rich.console import Console

from harness import cli_ablate
from harness.core.competition import CONDITIONS  # constants only: costs nothing at start-up
from harness.core.errors import HarnessError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2, like ours
        raise UsageError(f"{self.prog}: {message}")


DEMO_STUDIES, DEMO_SEED = 120, 0  # harness.data.demo's defaults, here so --help costs no import (a test ties them)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harness", description="Experiment-tracked harness for the RSNA 2024 lumbar-spine classifier.",
                epilog="`harness COMMAND --help` describes one command. Start with `harness run v9 --fold 0` (the "
                       "built-in demo data), then `harness ui`.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="train one variant on one fold (or a matrix of folds x seeds), tracked in MLflow")
    run.add_argument("variant", help="registered variant, e.g. v9 (see `harness variants`)")
    run.add_argument("--fold", default="0", metavar="FOLD|LIST|all",
                     help="validation fold (default 0); a list (0,2,4) or `all` trains a matrix, one run per cell")
    _config_arguments(run)
    run.add_argument("--seed", metavar="N|LIST",
                     help="shorthand for --set train.seed=N; a list (1,2,3) trains a matrix")
    run.add_argument("--seeds", type=int, metavar="N",
                     help="a matrix over N seeds, counting up from the variant's train.seed")
    run.add_argument("--devices", type=int, metavar="N",
                     help="train with DistributedDataParallel over N processes, one per GPU (gloo on CPU); "
                          "shorthand for --set train.devices=N")
    run.add_argument("--resume", nargs="?", const="latest", metavar="RUN_ID|FILE",
                     help="continue an unfinished run after its last completed epoch: alone, the latest of this "
                          "variant, fold and config (a new run if there is none); or the run id or checkpoint named")
    run.add_argument("--workers", type=int, metavar="N",
                     help="a matrix's cells shared between N local worker processes (one GPU each, or an equal "
                          "share of the CPU cores)")
    run.add_argument("--storage", metavar="URL",
                     help="SQLAlchemy URL (e.g. postgresql://...) of a queue the matrix's workers share: the same "
                          "command on several machines trains each cell once; a lost worker's cell is retried")
    run.add_argument("--take", metavar="VARIANT:FACTORS",
                     help="train the variant with another's factors, e.g. --take v9:loss,sampling (`harness diff` "
                          "names the factors); the run is the mix VARIANT+v9:sampling,loss")
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    run.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)

    cfg = sub.add_parser("config", help="print a variant's resolved config: every key, its value, where it came "
                                        "from, and what it means")
    cfg.add_argument("variant", help="registered variant, e.g. v9")
    cfg.add_argument("--fold", type=int, default=0, help="validation fold (default 0)")
    _config_arguments(cfg)
    cfg.add_argument("--json", action="store_true", help="one JSON list of {key, value, source, doc}")

    cmp = sub.add_parser("compare", help="compare finished runs per class, with intervals and paired tests")
    cmp.add_argument("variants", nargs="*", help="variants to compare, baseline first (e.g. v4 v8 v9)")
    cmp.add_argument("--fold", default="0", metavar="FOLD|LIST|all",
                     help="fold(s) to compare: 0 (default), 0,2,4 or all; with several folds or seeds the runs are "
                          "also compared at version level, paired by fold and seed")
    cmp.add_argument("--runs", nargs="+", default=[], metavar="RUN_ID", help="explicit MLflow run ids instead")
    cmp.add_argument("--baseline", help="variant the others are tested against (default: the first named)")
    cmp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    cmp.add_argument("--output", metavar="DIR", help="also write CSV, Markdown, JSON and plots into DIR")
    cmp.add_argument("--run-missing", action="store_true", help="train the variants that have no finished run first")
    cmp.add_argument("--data-dir", help="dataset for --run-missing (default $RSNA_DATA_DIR, else the demo)")
    cmp.add_argument("--profile", help="profile for --run-missing (default as `harness run`)")
    cmp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="config override for --run-missing, as in `harness run`; repeatable")
    cmp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutation draws")
    cmp.add_argument("--seeds", type=int, metavar="N", help="training seeds per fold for --plan and --run-missing "
                                                            "(counting up from the variant's train.seed; default 1)")
    cmp.add_argument("--plan", action="store_true", help="say what these folds x seeds can resolve (the minimum "
                                                         "detectable BA difference), before anything trains")

    cli_ablate.add_parsers(sub)

    tune = sub.add_parser("tune", help="an Optuna study over config keys, every trial a tracked run")
    tune.add_argument("spec", help="study spec (YAML), e.g. studies/v9_class_weights.yaml")
    tune.add_argument("--trials", type=int, help="total trials the study should reach (default: the spec's)")
    tune.add_argument("--storage", help="SQLAlchemy URL (e.g. postgresql://...) for many machines "
                                        "(default: a journal file beside the spec)")
    tune.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    tune.add_argument("--data-dir", help="dataset root (default $RSNA_DATA_DIR, else the demo)")
    tune.add_argument("--profile", help="smoke or full (default: smoke on the demo data, full on real data)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override for every trial, as in `harness run`; repeatable")
    tune.add_argument("--worker-trials", type=int, help=argparse.SUPPRESS)
    tune.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)

    var = sub.add_parser("variants", help="list the registered variants")
    var.add_argument("--json", action="store_true", help="machine-readable output")

    data = sub.add_parser("data", help="dataset tools: demo, check")
    dsub = data.add_subparsers(dest="data_command", metavar="{demo,check}", required=True, parser_class=_Parser)
    demo = dsub.add_parser("demo", help="write the synthetic demo dataset in the Kaggle layout")
    demo.add_argument("--out", help="output folder (default: $HARNESS_HOME/demo, i.e. ./.harness/demo, where "
                                    "`harness run` looks)")
    demo.add_argument("--studies", type=int, default=DEMO_STUDIES, help=f"number of studies (default {DEMO_STUDIES})")
    demo.add_argument("--seed", type=int, default=DEMO_SEED, help=f"generator seed (default {DEMO_SEED})")
    check = dsub.add_parser("check", help="report what in a dataset is usable and whether a run can start")
    check.add_argument("--data-dir", help="dataset root in the Kaggle layout (default $RSNA_DATA_DIR, else the "
                                          "built-in demo, as `harness run`)")
    check.add_argument("--condition", default="spinal_canal_stenosis", choices=list(CONDITIONS),
                       help="condition the verdict is for (default spinal_canal_stenosis)")
    check.add_argument("--workers", type=int, help="decoding processes (default: the free CPU cores)")
    check.add_argument("--json", action="store_true", help="one JSON object on stdout")

    ui = sub.add_parser("ui", help="the MLflow UI on the harness's store")
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1 only)")
    ui.add_argument("--port", type=int, default=5000)
    return p


def _config_arguments(p: argparse.ArgumentParser) -> None:
    """The config layers `run` and `config` share."""
    p.add_argument("--data-dir", help="dataset root in the Kaggle layout (default $RSNA_DATA_DIR, else the demo)")
    p.add_argument("--profile", help="smoke or full (default: smoke on the demo data, full on real data)")
    p.add_argument("--config", help="YAML file of config overrides")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (dotted, YAML-typed; `harness config VARIANT` lists them); "
                        "repeatable")


def _run_sets(args) -> dict:
    from harness.core.overrides import parse_set

    sets = parse_set(args.set)
    if getattr(args, "devices", None) is not None:
        sets["train.devices"] = args.devices
    return sets


def check_run_arguments(args, sets: dict) -> list[tuple[int, int]]:
    """Everything about a run that can be wrong without reading data, checked before torch, MLflow
    and albumentations are imported: the variant, folds, seeds, profile, config file, --set keys,
    types and values, and the weights file. Returns the (fold, seed) cells, one for a plain run."""
    from harness.core.cells import parse_folds, parse_seeds
    from harness.core.registry import get_variant
    from harness.core.run_config import build_config, default_profile

    variant = get_variant(args.variant)
    profile = args.profile or default_profile(args.data_dir)
    base = build_config(variant, 0, profile, args.config, sets, args.data_dir)
    folds = parse_folds(args.fold, base.data.num_folds)
    seeds = parse_seeds(getattr(args, "seed", None), getattr(args, "seeds", None), base.train.seed)
    cells = [(fold, seed) for fold in folds for seed in seeds]
    for fold, seed in cells:
        build_config(variant, fold, profile, args.config, sets | {"train.seed": seed}, args.data_dir)
    workers, storage = getattr(args, "workers", None), getattr(args, "storage", None)
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if storage is not None and "://" not in storage:
        raise UsageError(f"--storage {storage}: expected an SQLAlchemy URL such as postgresql://user@host/db")
    if (storage or (workers or 1) > 1) and len(cells) == 1:
        raise UsageError("--workers and --storage share a matrix's cells between workers; this is one run "
                         "(name several folds or seeds: --fold all, --seeds N)")
    if (storage or (workers or 1) > 1) and (args.resume or base.train.devices > 1):
        raise UsageError(f"{'--resume' if args.resume else '--devices'} with --workers or --storage: each worker "
                         "trains a cell in one process, and resumes a stopped cell by itself")
    if len(cells) > 1 and args.resume:
        raise UsageError("--resume continues one run; a matrix resumes by itself (run the same command again)")
    if len(cells) > 1 and base.train.devices > 1:
        raise UsageError("--devices trains one run; train a matrix's cells one process each (drop --devices)")
    return cells


def cmd_run(args, console: Console) -> int:
    if args.take:  # the run is the mix: a variant of its own name, checked like any other (harness.core.mixing)
        from harness.core.mixing import mix_name, parse_take
        from harness.core.registry import get_variant

        donor, factors = parse_take(args.take)
        args.variant = get_variant(mix_name(args.variant, donor, factors)).name
    sets = _run_sets(args)
    cells = check_run_arguments(args, sets)
    if len(cells) > 1 and (args.storage or (args.workers or 1) > 1):
        from harness.training.matrix_workers import MatrixArgs, run_shared

        shared = MatrixArgs(args.variant, args.fold, args.seed, args.seeds, args.data_dir, args.profile, args.config,
                            sets, args.set, args.workers or 1, args.storage, args.worker_index, args.worker_threads)
        return run_shared(shared, cells, console)
    if len(cells) > 1:
        from harness.training.matrix import run_matrix

        return run_matrix(args.variant, cells, args.data_dir, args.profile, args.config, sets, console)
    from harness.training.execute import execute, execute_distributed, find_resume
    from harness.training.plan import describe, prepare

    (fold, seed), = cells
    if getattr(args, "seed", None) is not None:
        sets["train.seed"] = seed
    plan = prepare(args.variant, fold, args.data_dir, args.profile, args.config, sets, console)
    describe(plan, console)
    point = find_resume(plan, args.resume, console) if args.resume else None
    if plan.cfg.train.devices > 1:
        return execute_distributed(plan, console, point)
    execute(plan, console, resume=point)
    return 0


def cmd_config(args, console: Console) -> int:
    from harness.core import config_view
    from harness.core.registry import get_variant
    from harness.core.run_config import build_config, default_profile

    sets = _run_sets(args)
    variant = get_variant(args.variant)
    profile = args.profile or default_profile(args.data_dir)
    cfg = build_config(variant, args.fold, profile, args.config, sets, args.data_dir)
    table = config_view.rows(variant, cfg, args.config, sets)
    if args.json:
        print(json.dumps([r | {"value": config_view.as_plain(r["value"])} for r in table], indent=2))
    else:
        console.print(f"[bold]{cfg.variant}[/] fold {cfg.fold}, profile {cfg.profile}: {len(table)} keys "
                      "(set one with --set KEY=VALUE)")
        config_view.print_rows(table, console)
    return 0


def cmd_compare(args, console: Console) -> int:
    from harness.cli_compare import cmd_compare as compare_command

    return compare_command(args, console)


def check_tune_arguments(args):
    """The spec file (keys, objective metric, space), the storage URL, the counts and the spec against
    the run config it will train with, before torch and MLflow are imported. Returns the spec."""
    from harness.core.overrides import parse_set
    from harness.core.registry import get_variant
    from harness.core.run_config import build_config, default_profile
    from harness.tuning.spec import check_spec, load_spec

    spec = load_spec(args.spec)
    if args.storage and "://" not in args.storage:
        raise UsageError(f"--storage {args.storage}: expected an SQLAlchemy URL such as postgresql://user@host/db")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    trials = args.trials if args.trials is not None else spec.trials
    if trials < 1:
        raise UsageError(f"--trials must be at least 1, got {trials}")
    profile = args.profile or default_profile(args.data_dir)
    base = build_config(get_variant(spec.variant), spec.fold, profile, None, dict(spec.fixed) | parse_set(args.set),
                        args.data_dir)
    check_spec(spec, base)
    return spec, trials


def cmd_tune(args, console: Console) -> int:
    from harness.core.overrides import parse_set

    spec, trials = check_tune_arguments(args)
    from harness.tuning.study import TuneArgs, tune, worker_main

    targs = TuneArgs(trials, args.storage, args.workers, args.data_dir, args.profile, parse_set(args.set), args.set)
    if args.worker_trials is not None:
        worker_main(spec, targs, args.worker_trials, args.worker_index, console)
    else:
        tune(spec, targs, console)
    return 0


def cmd_variants(args, console: Console) -> int:
    from harness.core.registry import list_variants, summarise

    with Console(stderr=True).status("building each variant's model to count its parameters"):
        rows = [summarise(name) for name in list_variants()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        console.print(f"[bold]{row['name']:<6}[/] {row['parameters']:>12,}  {row['description']}")
        console.print(f"       {row['architecture']}", style="dim")
    return 0


def cmd_data(args, console: Console) -> int:
    return {"demo": _data_demo, "check": _data_check}[args.data_command](args, console)


def _data_demo(args, console: Console) -> int:
    from pathlib import Path

    from harness.training.plan import harness_home, write_demo

    out = Path(args.out) if args.out else harness_home() / "demo"
    studies, seed = args.studies, args.seed
    write_demo(out, console, studies, seed)
    console.print(f"wrote {studies} demo studies (seed {seed}) to {out}")
    return 0


def _data_check(args, console: Console) -> int:

    from rich.progress import Progress

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    from harness.data.check import check_dataset, print_report
    from harness.training.plan import resolve_data

    err = Console(stderr=True)  # messages stay off stdout, which may be --json
    root, _ = resolve_data(args.data_dir, err)  # as `harness run`: --data-dir, $RSNA_DATA_DIR, else the demo
    with Progress(console=err, transient=True, disable=not (err.is_terminal or err.is_jupyter)) as bar:
        task = bar.add_task("decoding labelled files", total=None)
        report = check_dataset(root, args.condition, args.workers,
                               progress=lambda done, total: bar.update(task, completed=done, total=total))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, console)
    return 0 if report.runnable else 1


def cmd_ui(args, console: Console) -> int:
    from harness.tracking import store

    uri = store.ensure_store()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", args.host, "--port", str(args.port)]
    if uri == store.default_uri():
        cmd += ["--default-artifact-root", store.artifact_root().as_uri()]
    console.print(f"MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl-C to stop")
    console.print("first visit: click 'Model training' at the top left (MLflow 3 opens in GenAI mode), or open:")
    for name, link in store.ui_links(f"http://{args.host}:{args.port}"):
        console.print(f"  {name}: {link}", soft_wrap=True)
    sys.stdout.flush()
    os.execv(sys.executable, cmd)  # replace this process: signals go straight to the server
    return 0


COMMANDS = {"run": cmd_run, "config": cmd_config, "compare": cmd_compare, "diff": cli_ablate.cmd_diff,
            "ablate": cli_ablate.cmd_ablate, "tune": cmd_tune, "variants": cmd_variants, "data": cmd_data,
            "ui": cmd_ui}


def main(argv: list[str] | None = None) -> int:
    console = Console(highlight=False, soft_wrap=True)
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        if args.command is None:  # bare `harness`: what it can do, as git and pip answer
            parser.print_help()
            return 0
        return COMMANDS[args.command](args, console)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM during a run (harness.core.signals.Stopped)
        # a command that already said what stopped and how to go on sets `message` ("" for silence)
        message = getattr(exc, "message", None)
        if message is None:
            message = "stopped by SIGTERM" if getattr(exc, "exit_code", None) == 143 else "interrupted"
        if message:
            print(message, file=sys.stderr)
        return getattr(exc, "exit_code", 130)


if __name__ == "__main__":
    raise SystemExit(main())
