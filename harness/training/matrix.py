"""`harness run v9 --fold all --seeds 3`: a matrix of ordinary runs, one per (fold, seed) cell, as
children of one parent run (harness.kind=matrix) that holds the aggregates (training.matrix_summary).

Running the same command again continues the matrix: the parent is found by its `harness.matrix`
id (the variant, every cell's config hash and the data), a cell already FINISHED with the same config
hash is skipped, and a cell a stop or a crash left unfinished resumes from its last checkpoint.
With `--workers N` or `--storage URL` the cells go through a queue instead (training.cell_queue).
"""
from __future__ import annotations

import hashlib
import time

from rich.console import Console

from harness.core.config import Config
from harness.core.errors import UsageError
from harness.tracking import store
from harness.tracking.writer import RunWriter
from harness.training import matrix_summary
from harness.training import resume as resume_mod
from harness.training.execute import execute, experiment, mix_tags
from harness.training.plan import RunPlan, describe, prepare


def matrix_id(plans: list[RunPlan]) -> str:
    """What makes two matrices one: the variant, each cell's config hash, the dataset."""
    key = "|".join([plans[0].cfg.variant, plans[0].data_fp] + sorted(resume_mod.config_hash(p.cfg) for p in plans))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def finished_cell(experiment_id: str, plan: RunPlan) -> str | None:
    """The id of a FINISHED run of this cell's exact config on this data, or None."""
    return finished_run(experiment_id, plan.cfg, plan.data_fp)


def finished_run(experiment_id: str, cfg: Config, data_fp: str) -> str | None:
    """The id of a FINISHED run of exactly this config on the dataset with this fingerprint, or None."""
    config_hash = resume_mod.config_hash(cfg)
    query = (f"tags.`harness.variant` = '{cfg.variant}' and tags.`harness.fold` = '{cfg.fold}' and "
             f"tags.`harness.seed` = '{cfg.train.seed}' and tags.`harness.config_hash` = '{config_hash}' "
             f"and tags.`harness.data_fingerprint` = '{data_fp}' and attributes.status = 'FINISHED'")
    runs = store.search_runs([experiment_id], query)
    return runs[0].info.run_id if runs else None


def finished_parent(experiment_id: str, mid: str) -> str | None:
    query = f"tags.`harness.matrix` = '{mid}' and tags.`harness.kind` = 'matrix' and attributes.status = 'FINISHED'"
    found = store.search_runs([experiment_id], query)
    return found[0].info.run_id if found else None


def parent_run(experiment_id: str, mid: str, plans: list[RunPlan], extra_tags: dict[str, str] | None = None) -> str:
    """The matrix's parent run: the unfinished one with this id, else a new one."""
    query = f"tags.`harness.matrix` = '{mid}' and tags.`harness.kind` = 'matrix' and attributes.status != 'FINISHED'"
    found = store.search_runs([experiment_id], query)
    folds = sorted({p.cfg.fold for p in plans})
    seeds = sorted({p.cfg.train.seed for p in plans})
    if found:
        run_id = found[0].info.run_id
        writer = RunWriter(run_id)
        writer.delete_tags(("harness.stop_reason",))
        if extra_tags:
            writer.tags(extra_tags)
        writer.reopen()
        return run_id
    cfg = plans[0].cfg
    name = f"{cfg.variant}-matrix-{len(folds)}folds-{len(seeds)}seeds"
    return store.create_run(experiment_id, name, {
        "harness.kind": "matrix", "harness.matrix": mid, "harness.variant": cfg.variant,
        "harness.folds": ",".join(map(str, folds)), "harness.seeds": ",".join(map(str, seeds)),
        "harness.cells": str(len(plans)), "harness.profile": cfg.profile, "harness.data_source": plans[0].source,
        "harness.data_fingerprint": plans[0].data_fp, "harness.condition": cfg.data.condition,
        **mix_tags(plans[0].variant), **(extra_tags or {})})


def eta_text(seconds: float | None) -> str:
    """'; about 3 min left' ('' when unknown)."""
    if seconds is None:
        return ""
    return f"; about {seconds / 60:.0f} min left" if seconds >= 60 else f"; about {seconds:.0f} s left"


def _eta(started: float, trained: int, remaining: int) -> str:
    if not trained or not remaining:
        return ""
    return eta_text((time.monotonic() - started) / trained * remaining)


def plan_matrix(variant: str, cells: list[tuple[int, int]], data_dir: str | None, profile: str | None,
                config_file: str | None, sets: dict, console: Console,
                check_weights: bool = True) -> tuple[list[RunPlan], str, str]:
    """Every cell's plan (described once), the experiment and the matrix id; a weights-file mistake is
    one line here, before any parent run exists."""
    quiet = Console(quiet=True)
    plans = [prepare(variant, fold, data_dir, profile, config_file, sets | {"train.seed": seed},
                     console if i == 0 else quiet) for i, (fold, seed) in enumerate(cells)]
    if len({p.cfg.data.num_folds for p in plans}) != 1:
        raise UsageError("the cells of a matrix must share data.num_folds")
    describe(plans[0], console)
    if check_weights:
        plans[0].variant.build_model(plans[0].cfg)
    return plans, experiment(plans[0]), matrix_id(plans)


def nothing_to_train(exp: str, mid: str, plans: list[RunPlan], console: Console) -> bool:
    """True (and said so) when the parent is FINISHED and every cell has a FINISHED run."""
    done = finished_parent(exp, mid)
    if done and all(finished_cell(exp, plan) for plan in plans):
        console.print(f"matrix {mid}: every cell is FINISHED; its parent run {done} holds the aggregates "
                      "(nothing to train)", highlight=False)
        return True
    return False


def run_matrix(variant: str, cells: list[tuple[int, int]], data_dir: str | None, profile: str | None,
               config_file: str | None, sets: dict, console: Console, parent_tags: dict[str, str] | None = None) -> int:
    """Every cell trained (or skipped, or resumed), one after another in this process, then the
    parent's aggregates. A stop marks the parent KILLED and says how to go on. `parent_tags` join the
    parent's (an ablation names itself and the arm's factor there)."""
    plans, exp, mid = plan_matrix(variant, cells, data_dir, profile, config_file, sets, console)
    if nothing_to_train(exp, mid, plans, console):
        return 0
    parent = parent_run(exp, mid, plans, parent_tags)
    writer = RunWriter(parent)
    console.print(f"[bold]matrix[/] {mid}: {len(plans)} cells ({', '.join(f'fold {f} seed {s}' for f, s in cells)}); "
                  f"parent run {parent}", highlight=False)
    started, trained, run_ids = time.monotonic(), 0, []
    tags = {"mlflow.parentRunId": parent, "harness.matrix": mid}
    for i, plan in enumerate(plans, 1):
        cfg, where = plan.cfg, f"cell {i}/{len(plans)}: fold {plan.cfg.fold} seed {plan.cfg.train.seed}"
        done = finished_cell(exp, plan)
        if done:
            console.print(f"{where}: FINISHED before (run {done}), skipped", highlight=False)
            run_ids.append(done)
            continue
        point = resume_mod.find(exp, cfg, plan.data_fp, "latest")
        console.print(f"[bold]{where}[/]" + (f", resuming run {point.run_id} {point.where}" if point else "")
                      + _eta(started, trained, len(plans) - i + 1), highlight=False)
        stopped = (f"stopped: {where} and the matrix's parent run {parent} are KILLED; the same command continues "
                   "the matrix (finished cells are skipped, the stopped one resumes)")
        with writer.ended_on_error(stopped):
            run_ids.append(execute(plan, console, tags=tags, resume=point).run_id)
        trained += 1
    summary = matrix_summary.summarise(plans, run_ids, writer)
    writer.end()
    for line in summary:
        console.print(line, highlight=False)
    return 0
