"""`harness ablate A B`: train the arms of an ablation path as run matrices, then share out BA(B) - BA(A).

Every arm is an ordinary run matrix (harness.training.matrix) over the chosen folds and seeds, whose parent
is a child of the ablation's parent run (harness.kind=ablation) and is tagged harness.ablation and
harness.factor. A cell already FINISHED with the same config hash on the same data is reused, whoever
trained it (`harness run v9 --fold all`, another ablation), so running the same command again continues a
stopped ablation. The plan (arms, runs, those already trained, an estimated time from the variants' recorded
epoch times) is printed before anything trains, and is all `--dry-run` does.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from rich.console import Console

from harness.ablation import effects, report
from harness.ablation.args import AblateArgs, check
from harness.ablation.paths import AblationPlan, Arm, greedy_step
from harness.compare.runs import load_run, predictions_frame
from harness.compare.version_cells import cells_from_frame
from harness.compare.version_level import EPOCH_NOTES, epoch_used
from harness.core.registry import get_variant
from harness.core.run_config import build_config
from harness.core.signals import stop_signals_raise
from harness.tracking import reader, store
from harness.tracking.writer import RunWriter
from harness.training.execute import experiment
from harness.training.matrix import eta_text, finished_run, run_matrix
from harness.training.plan import prepare

SECONDS_KEY = "time/epoch_s"


def _configs(args: AblateArgs, variant: str, cells, profile: str, data_dir: str):
    return [build_config(get_variant(variant), f, profile, args.config, args.sets | {"train.seed": s}, data_dir)
            for f, s in cells]


def _epoch_seconds(exp: str, variants: list[str], profile: str) -> dict[str, float]:
    """variant -> mean recorded seconds per epoch of its FINISHED runs on this profile (the newest 20)."""
    out = {}
    for v in variants:
        runs = store.search_runs([exp], f"tags.`harness.variant` = '{v}' and tags.`harness.profile` = '{profile}' "
                                        "and attributes.status = 'FINISHED'")[:20]
        seconds = [r.data.metrics[SECONDS_KEY] for r in runs if SECONDS_KEY in r.data.metrics]
        if seconds:
            out[v] = sum(seconds) / len(seconds)
    return out


@dataclass
class Context:
    """What the ablation runs on: the experiment, the data, the profile, the cells."""

    args: AblateArgs
    plan: AblationPlan
    cells: list
    profile: str
    exp: str
    data_fp: str
    data_dir: str

    def finished(self, variant: str) -> list[str | None]:
        """Per cell: the FINISHED run of this arm's config, or None."""
        return [finished_run(self.exp, cfg, self.data_fp)
                for cfg in _configs(self.args, variant, self.cells, self.profile, self.data_dir)]


def context(args: AblateArgs, plan: AblationPlan, cells, profile: str, console: Console) -> Context:
    first = prepare(args.a, cells[0][0], args.data_dir, profile, args.config, args.sets | {"train.seed": cells[0][1]},
                    console)
    return Context(args, plan, cells, profile, experiment(first), first.data_fp, first.cfg.data_dir)


def print_plan(ctx: Context, console: Console) -> None:
    """The arms, the runs, those already trained and an estimated time, before anything trains."""
    plan, cells = ctx.plan, ctx.cells
    seconds = _epoch_seconds(ctx.exp, [plan.a, plan.b], ctx.profile)
    folds = sorted({f for f, _ in cells})
    seeds = sorted({s for _, s in cells})
    groups = ", ".join(f"{g.label} ({'+'.join(g.factors)})" if len(g.factors) > 1 else g.label for g in plan.groups)
    console.print(f"[bold]ablation[/] {plan.a} -> {plan.b}, path {plan.path}, {len(plan.groups)} factors: {groups}",
                  highlight=False)
    for note in plan.notes:
        console.print(f"  note: {note}", highlight=False, markup=False)
    todo, total_s = 0, 0.0
    per_epoch = sum(seconds.values()) / len(seconds) if seconds else None
    for i, arm in enumerate(plan.arms, 1):
        done = sum(r is not None for r in ctx.finished(arm.variant))
        todo += len(cells) - done
        epochs = _configs(ctx.args, arm.variant, cells[:1], ctx.profile, ctx.data_dir)[0].train.epochs
        if per_epoch:
            total_s += (len(cells) - done) * epochs * per_epoch
        role = arm.role + (f" {arm.group}" if arm.group else "")
        console.print(f"  arm {i:>2}  {arm.variant:<40} {role:<30} {done}/{len(cells)} cells trained", highlight=False)
    more = plan.max_arms() - len(plan.arms)
    runs = len(plan.arms) * len(cells)
    text = (f"{len(plan.arms)} arms x {len(folds)} fold{'s' if len(folds) > 1 else ''} x {len(seeds)} "
            f"seed{'s' if len(seeds) > 1 else ''} = {runs} runs, {todo} to train")
    if more:
        text += (f"; greedy chooses each later step from what the last one measured: up to {more} more arms "
                 f"({more * len(cells)} runs)")
    if per_epoch:
        rate = ", ".join(f"{v} {s:.1f} s" for v, s in seconds.items())
        text += f"; about {total_s / 60:.0f} min for those (recorded seconds per epoch: {rate})"
    else:
        text += f"; no recorded epoch time for {plan.a} or {plan.b} on the {ctx.profile} profile to estimate from"
    console.print(text, highlight=False)


def ablation_id(ctx: Context) -> str:
    key = json.dumps([ctx.plan.a, ctx.plan.b, ctx.plan.path, [g.factors for g in ctx.plan.groups], ctx.cells,
                      ctx.profile, ctx.args.config, sorted(ctx.args.sets.items(), key=str), ctx.data_fp], default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def finished_parent(ctx: Context, aid: str) -> str | None:
    found = store.search_runs([ctx.exp], f"tags.`harness.ablation` = '{aid}' and tags.`harness.kind` = 'ablation' "
                                         "and attributes.status = 'FINISHED'")
    return found[0].info.run_id if found else None


def parent_run(ctx: Context, aid: str) -> str:
    """The ablation's unfinished parent with this id, reopened; else a new one."""
    found = store.search_runs([ctx.exp], f"tags.`harness.ablation` = '{aid}' and tags.`harness.kind` = 'ablation' "
                                         "and attributes.status != 'FINISHED'")
    if found:
        writer = RunWriter(found[0].info.run_id)
        writer.reopen()
        return found[0].info.run_id
    plan = ctx.plan
    return store.create_run(ctx.exp, f"ablate-{plan.a}-{plan.b}-{plan.path}", {
        "harness.kind": "ablation", "harness.ablation": aid, "harness.a": plan.a, "harness.b": plan.b,
        "harness.path": plan.path, "harness.factors": ";".join(g.label for g in plan.groups),
        "harness.folds": ",".join(str(f) for f in sorted({f for f, _ in ctx.cells})),
        "harness.seeds": ",".join(str(s) for s in sorted({s for _, s in ctx.cells})), "harness.profile": ctx.profile,
        "harness.data_fingerprint": ctx.data_fp})


class ArmTrainer:
    """Trains arms one after another under the parent, with progress and an estimate of the time left."""

    def __init__(self, ctx: Context, parent: str, aid: str, console: Console):
        self.ctx, self.parent, self.aid, self.console = ctx, parent, aid, console
        self.started, self.trained, self.count = time.monotonic(), 0, 0

    def train(self, arm: Arm, total: int) -> None:
        self.count += 1
        a = self.ctx.args
        role = arm.role + (f" {arm.group}" if arm.group else "")
        left = sum(r is None for r in self.ctx.finished(arm.variant))
        eta = ""
        if self.trained:
            eta = eta_text((time.monotonic() - self.started) / self.trained * left)
        if not left:  # every cell FINISHED before (this ablation, another, or `harness run`): reused as it is
            self.console.print(f"arm {self.count}/{total}: {arm.variant} ({role}): every cell trained before, reused",
                               highlight=False)
            return
        self.console.print(f"[bold]arm {self.count}/{total}[/]: {arm.variant} ({role}), {left} of "
                           f"{len(self.ctx.cells)} cells to train{eta}", highlight=False)
        tags = {"mlflow.parentRunId": self.parent, "harness.ablation": self.aid,
                "harness.factor": arm.group or {"A": "none", "B": "all"}.get(arm.role, arm.factor_tag),
                "harness.arm": arm.role, "harness.taken": arm.factor_tag}
        run_matrix(arm.variant, self.ctx.cells, a.data_dir, a.profile, a.config, a.sets, self.console,
                   parent_tags=tags)
        self.trained += left


def arm_cells(ctx: Context, variant: str) -> list:
    """The RunRecords of an arm's cells (each a FINISHED run of the arm's exact config)."""
    records = []
    for run_id in ctx.finished(variant):
        if run_id is None:
            raise RuntimeError(f"arm {variant}: a cell has no FINISHED run after training")
        records.append(load_run(reader.find_run(run_id)))
    return records


def ablate(args: AblateArgs, console: Console) -> int:
    plan, cells, profile = check(args)
    ctx = context(args, plan, cells, profile, console)
    print_plan(ctx, console)
    if args.dry_run:
        return 0
    aid = ablation_id(ctx)
    done = finished_parent(ctx, aid)
    if done and all(None not in ctx.finished(arm.variant) for arm in plan.arms):
        steps, arms = train_arms(ctx, ArmTrainer(ctx, done, aid, Console(quiet=True)))
        console.print(f"ablation {aid} is FINISHED: its parent run {done} holds the table, ablation.json and "
                      "waterfall.png (nothing to train)", highlight=False)
        report.print_result(summarise(ctx, arms, steps), console)
        return 0
    parent = parent_run(ctx, aid)
    writer = RunWriter(parent)
    console.print(f"ablation {aid}: parent run {parent}", highlight=False)
    trainer = ArmTrainer(ctx, parent, aid, console)
    stopped = (f"stopped: the ablation's parent run {parent} is KILLED; the same `harness ablate` command continues "
               "it (finished cells are reused, a stopped one resumes)")
    # a stop between two cells ends the parent KILLED too (while a cell trains, training has its own handler)
    with writer.ended_on_error(stopped), stop_signals_raise():
        steps, arms = train_arms(ctx, trainer)
        result = summarise(ctx, arms, steps)
        report.log_to_parent(result, writer)
    writer.end()
    report.print_result(result, console)
    console.print(f"ablation run {parent} (harness.kind=ablation) holds the table, ablation.json and waterfall.png",
                  highlight=False)
    return 0


def train_arms(ctx: Context, trainer: ArmTrainer) -> tuple[list, dict]:
    """Every arm trained; for greedy, step by step. Returns (greedy steps, {variant: records})."""
    plan, records = ctx.plan, {}

    def train(arm: Arm, total: int) -> None:
        trainer.train(arm, total)
        records[arm.variant] = arm_cells(ctx, arm.variant)

    if plan.path != "greedy":
        for arm in plan.arms:
            train(arm, len(plan.arms))
        return [], records
    current = plan.arm(frozenset(), "A")
    train(current, plan.max_arms())
    steps = []
    for step in range(1, len(plan.groups) + 1):
        candidates = greedy_step(plan, current.taken, step)
        for arm in candidates:
            train(arm, plan.max_arms())
        epoch = _epoch({arm.variant: records[arm.variant] for arm in candidates})  # one epoch rule for all
        cells = {arm.variant: _cells(records[arm.variant], epoch) for arm in candidates}
        chosen = effects.greedy_choice(plan, cells, candidates)
        steps.append((current, chosen, candidates))
        current = chosen
    return steps, records


def _epoch(records: dict) -> str:
    """The epoch compare's version level would score these runs at: "last" when every run has it."""
    return epoch_used(records, list(records))


def _cells(runs: list, epoch: str) -> dict:
    return cells_from_frame(predictions_frame(runs, epoch))


def summarise(ctx: Context, records: dict, steps: list) -> dict:
    """The result: every effect with its interval and verdict, the arms, the budget."""
    plan, epoch = ctx.plan, _epoch(records)
    cells = {v: _cells(rs, epoch) for v, rs in records.items()}
    folds, seeds = sorted({f for f, _ in ctx.cells}), sorted({s for _, s in ctx.cells})
    budget = f"{len(folds)} fold{'s' if len(folds) > 1 else ''} x {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    total = effects.total(plan, cells)
    if plan.path == "both":
        rows = effects.both(plan, cells)
    elif plan.path == "shapley":
        rows = effects.shapley(plan, cells)
    else:
        rows = effects.greedy(plan, cells, steps)
        for r in rows:
            r["ba_after"] = effects.mean_ba(cells[r["arms"]["after"]])
    arms = [{"variant": v, "cells": len(rs), "ba": effects.mean_ba(cells[v]), "runs": [r.run_id for r in rs]}
            for v, rs in records.items()]
    notes = list(plan.notes)
    if total["level"] == "model":
        notes.append("one cell per arm: these are effects on these trained models, and training variance is not "
                     "measured (--fold all --seeds 3 makes them effects of the recipes)")
    return {"a": plan.a, "b": plan.b, "path": plan.path, "groups": [{"label": g.label, "factors": list(g.factors)}
                                                                     for g in plan.groups],
            "notes": notes, "budget": budget, "folds": folds, "seeds": seeds, "epoch": epoch,
            "epoch_note": EPOCH_NOTES[epoch], "ba_a": effects.mean_ba(cells[plan.a]),
            "ba_b": effects.mean_ba(cells[plan.b]), "total": total, "rows": rows, "arms": arms}
