"""`harness run VARIANT --fold all --seeds N --workers K [--storage URL]`: a matrix whose cells go
through the queue of training.cell_queue, worked through by this process (`--storage` alone: one worker,
on as many machines as wanted) or by K local worker processes, each with one GPU (CUDA_VISIBLE_DEVICES)
or an equal share of the free CPU cores. The local workers' queue is SQLite under the harness home
unless `--storage` names a shared one; their output comes through here, each line prefixed with its
worker. `work` is one worker: a step at a time (a cell's ordinary run, child of the parent, or the
parent's aggregates), with its heartbeat; a stop queues the cell again, an error fails it.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from harness.core import threads
from harness.core.errors import UsageError, one_line
from harness.tracking import store
from harness.tracking.writer import RunWriter
from harness.training import cell_queue, matrix_summary
from harness.training import resume as resume_mod
from harness.training.device import resolve_device
from harness.training.execute import execute
from harness.training.matrix import finished_cell, nothing_to_train, plan_matrix
from harness.training.plan import RunPlan

UNBUFFERED = {"PYTHONUNBUFFERED": "1"}  # a worker's lines reach the console as it prints them


@dataclass
class MatrixArgs:
    """The `harness run` arguments a shared matrix needs, and those its worker processes are started with."""

    variant: str
    fold: str
    seed: str | None = None
    seeds: int | None = None
    data_dir: str | None = None
    profile: str | None = None
    config: str | None = None
    sets: dict = field(default_factory=dict)
    raw_sets: list[str] = field(default_factory=list)  # as typed, passed on to worker processes
    workers: int = 1
    storage: str | None = None
    worker_index: int | None = None  # set in a worker process started by `--workers`
    worker_threads: int | None = None  # its share of the cores


def run_shared(args: MatrixArgs, cells: list[tuple[int, int]], console: Console) -> int:
    """Set the queue up (or join it), then work through it here or in `--workers` processes."""
    spawned = args.worker_index is not None
    plans, exp, mid = plan_matrix(args.variant, cells, args.data_dir, args.profile, args.config, args.sets,
                                  Console(quiet=True) if spawned else console, check_weights=not spawned)
    workers = min(args.workers, len(plans))
    envs = worker_envs(plans[0], workers) if workers > 1 else []  # device mistakes before any parent run
    if nothing_to_train(exp, mid, plans, console):
        return 0
    url = args.storage or cell_queue.default_url(mid)
    queue = cell_queue.open_queue(url, mid, plans, exp, console)
    if not spawned:
        console.print(f"[bold]matrix[/] {mid}: {len(plans)} cells "
                      f"({', '.join(f'fold {f} seed {s}' for f, s in cells)}) queued in study "
                      f"{cell_queue.study_name(mid)} at {cell_queue.shown(url)}"
                      + (f" for {workers} local workers" if workers > 1 else "") + f"; parent run {queue.parent}",
                      highlight=False)
    if workers <= 1:
        return work(queue, plans, exp, mid, console, share(plans[0], args.worker_threads), spawned)
    return launch(args, queue, plans[0], mid, url, envs, console)


def _end_lost_runs(exp: str, mid: str, plan: RunPlan, point: resume_mod.ResumePoint | None) -> None:
    """Runs of this cell a lost worker left RUNNING, other than the one resumed here: KILLED."""
    cfg = plan.cfg
    query = (f"tags.`harness.matrix` = '{mid}' and tags.`harness.fold` = '{cfg.fold}' and "
             f"tags.`harness.seed` = '{cfg.train.seed}' and attributes.status = 'RUNNING'")
    for run in store.search_runs([exp], query):
        if point is None or run.info.run_id != point.run_id:
            writer = RunWriter(run.info.run_id)
            writer.tags({"harness.stop_reason": "worker lost",
                         "mlflow.runName": store.ended_run_name(run.info.run_id, "KILLED")})
            writer.end("KILLED")


def _train_cell(queue: cell_queue.Queue, mine: FrozenTrial, plan: RunPlan, exp: str, mid: str, console: Console,
                share: threads.ThreadChoice | None) -> None:
    cfg = plan.cfg
    where = f"fold {cfg.fold} seed {cfg.train.seed}"
    done = finished_cell(exp, plan)
    if done:
        console.print(f"{where}: FINISHED before (run {done}), skipped", highlight=False)
        cell_queue.complete(queue, mine, done, cell_queue.CELL_METRIC, console)
        return
    point = resume_mod.find(exp, cfg, plan.data_fp, "latest")
    retried = mine.system_attrs.get("failed_trial") is not None
    if retried:
        _end_lost_runs(exp, mid, plan, point)
    console.print(f"[bold]{where}[/] ({cell_queue.progress(queue, mine)})" + (" retried" if retried else "")
                  + (f", resuming run {point.run_id} {point.where}" if point else ""), highlight=False)
    if share is not None and not (point and point.threads):  # a resumed run keeps its own count
        plan = dataclasses.replace(plan, chosen_threads=share)
    outcome = execute(plan, console, tags={"mlflow.parentRunId": queue.parent, "harness.matrix": mid}, resume=point)
    cell_queue.complete(queue, mine, outcome.run_id, cell_queue.CELL_METRIC, console, trained=True)


def _aggregate(queue: cell_queue.Queue, mine: FrozenTrial, plans: list[RunPlan], exp: str, console: Console) -> None:
    runs = {cell_queue.step(t): t.user_attrs.get("mlflow_run_id") for t in queue.trials((TrialState.COMPLETE,))}
    run_ids = [runs.get(key) or finished_cell(exp, plan) for key, plan in zip(queue.keys, plans)]
    missing = [cell_queue.where(key) for key, run_id in zip(queue.keys, run_ids) if run_id is None]
    if missing:
        raise RuntimeError(f"no FINISHED run of {', '.join(missing)} in {store.tracking_uri()}")
    writer = RunWriter(queue.parent)
    lines = matrix_summary.summarise(plans, run_ids, writer)
    writer.end()
    cell_queue.complete(queue, mine, queue.parent, "ba/mean", console)
    for line in lines:
        console.print(line, highlight=False)


def stop_parent(queue: cell_queue.Queue, exc: KeyboardInterrupt, quiet: bool) -> KeyboardInterrupt:
    """A stop: the parent is KILLED unless cells still run elsewhere; one line on how to go on."""
    others = queue.trials((TrialState.RUNNING,))
    if not others:
        writer = RunWriter(queue.parent)
        writer.end_stopped(exc)
    state = "KILLED" if not others else f"RUNNING ({len(others)} step(s) go on elsewhere)"
    exc.message = "" if quiet else (
        f"stopped: a cell in progress is KILLED and queued again; the matrix's parent run {queue.parent} is "
        f"{state}; the same command continues the matrix (finished cells are skipped, the stopped one resumes)")
    return exc


def work(queue: cell_queue.Queue, plans: list[RunPlan], exp: str, mid: str, console: Console,
         share: threads.ThreadChoice | None = None, quiet: bool = False) -> int:
    """Take steps until none is left to take and none runs elsewhere; 0 once the aggregates are written.
    `quiet`: a `--workers` process, whose launcher says how the matrix stands and how a stop goes on."""
    by_key, said = dict(zip(queue.keys, plans)), False
    try:
        while True:
            cell_queue.fail_stale(queue)
            mine = cell_queue.claim(queue)
            if mine is None:
                takeable, running = cell_queue.pending(queue)
                if takeable:  # e.g. the aggregates, as the last cell finished elsewhere
                    time.sleep(0.1)
                    continue
                if not running:
                    break
                if not said:
                    console.print(f"waiting: {running} step(s) run on other workers (a lost one's is taken over "
                                  "here)", highlight=False)
                said = True
                time.sleep(cell_queue.HEARTBEAT_S)
                continue
            said = False
            with cell_queue.heartbeat(queue.storage, mine._trial_id):
                try:
                    if cell_queue.step(mine) == cell_queue.SUMMARY:
                        _aggregate(queue, mine, plans, exp, console)
                    else:
                        _train_cell(queue, mine, by_key[cell_queue.step(mine)], exp, mid, console, share)
                except KeyboardInterrupt:
                    cell_queue.fail(queue, mine, "stopped by a signal; queued to run again", again=True)
                    raise
                except BaseException as exc:
                    cell_queue.fail(queue, mine, one_line(exc), again=False)
                    RunWriter(queue.parent).end("FAILED")
                    raise
    except KeyboardInterrupt as exc:
        raise stop_parent(queue, exc, quiet) from None
    return cell_queue.report(queue, mid, Console(quiet=True) if quiet else console)


def worker_envs(plan: RunPlan, workers: int) -> list[dict[str, str]]:
    """Each worker's environment: one GPU apiece where the run trains on CUDA, else nothing added."""
    device = resolve_device(plan.cfg.train.device)
    if device.type != "cuda":
        return [{} for _ in range(workers)]
    if device.index is not None:
        raise UsageError(f"train.device={plan.cfg.train.device} names one GPU; --workers {workers} gives each "
                         "worker its own (choose them with CUDA_VISIBLE_DEVICES)")
    import torch

    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    visible = listed or [str(i) for i in range(torch.cuda.device_count())]
    if workers > len(visible):
        raise UsageError(f"--workers {workers}: only {len(visible)} GPU(s) visible; one worker per GPU")
    return [{"CUDA_VISIBLE_DEVICES": visible[k]} for k in range(workers)]


def share(plan: RunPlan, compute: int | None) -> threads.ThreadChoice | None:
    """A worker's threads as its launcher chose them (None: the worker chooses, as any run does)."""
    if compute is None:
        return None
    return threads.ThreadChoice(compute, plan.cfg.data.num_workers, threads.usable_cores(), None,
                                "its --workers share of the free cores")


def worker_command(args: MatrixArgs, url: str, index: int, compute: int | None) -> list[str]:
    """The same `harness run` as one worker of the queue at `url`."""
    cmd = [sys.executable, "-m", "harness", "run", args.variant, "--fold", args.fold, "--storage", url,
           "--worker-index", str(index)]
    for flag, value in (("--seed", args.seed), ("--seeds", args.seeds), ("--data-dir", args.data_dir),
                        ("--profile", args.profile), ("--config", args.config), ("--worker-threads", compute)):
        if value is not None:
            cmd += [flag, str(value)]
    for item in args.raw_sets:
        cmd += ["--set", item]
    return cmd


def _relay(stream, prefix: str) -> None:
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def launch(args: MatrixArgs, queue: cell_queue.Queue, plan: RunPlan, mid: str, url: str,
           envs: list[dict[str, str]], console: Console) -> int:
    """Start the workers, relay their output, wait for them; then what the queue holds."""
    workers, cfg, compute = len(envs), plan.cfg, None
    if cfg.train.threads == 0:  # chosen once here: a worker choosing for itself would count the others as busy
        compute = threads.compute_threads(threads.free_cores(), cfg.data.num_workers, workers)
    procs = [subprocess.Popen(worker_command(args, url, k, compute), env=os.environ | envs[k] | UNBUFFERED,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
             for k in range(workers)]
    relays = [threading.Thread(target=_relay, args=(p.stdout, f"[worker {k}] "), daemon=True)
              for k, p in enumerate(procs)]
    for relay in relays:
        relay.start()
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt as exc:  # the workers got the same Ctrl-C (one process group): let them record it
        for p in procs:
            p.wait()
        raise stop_parent(queue, exc, quiet=False) from None
    finally:
        for relay in relays:
            relay.join(timeout=10)
    if any(codes):
        console.print(f"[yellow]worker exit codes {codes}[/]", highlight=False)
    return max(cell_queue.report(queue, mid, console), int(any(codes)))
