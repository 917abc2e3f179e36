"""Thread settings side by side in one run, and the trainer's overhead over a bare PyTorch loop.

1. `harness run v9 --fold 0 --set train.epochs=E` (smoke profile, the built-in demo in a temporary
   HARNESS_HOME) in three arms: PyTorch's default intra-op threads (`train.threads=<its default>`,
   what every run used before train.threads existed), one thread (`train.threads=1`) and the choice
   from the free cores (`train.threads=0`, the default now). Two cases: as the machine is, and with
   one competing CPU hog (a process spinning `while True: pass`) started here for the case. Each
   round runs the arms in a rotated order, so none always goes first. Figures: training seconds per
   epoch (MLflow time/epoch_s), their ratio to the better of default and one thread.
2. One epoch of `Trainer.train_one_epoch` against a bare loop over the same loader with the same
   model (same initial weights), loss, optimiser and batches (the loader's generators reset), in a
   rotated order: the bare loop as written in PyTorch's tutorials, and the bare loop doing the same
   work as the trainer's step (gradient clipping, the LR schedule).

    python benchmarks/threads.py            # writes benchmarks/threads.json; figures go in threads.md
    python benchmarks/threads.py --rounds 1 --epochs 1 --cases idle --arms one --overhead-repeats 1 \\
        --data-dir DEMO --out /tmp/threads.json   # what CI runs

The machine may be shared: only ratios measured side by side in one run mean anything.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch
from mlflow import MlflowClient
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.core import threads  # noqa: E402
from harness.losses import build_loss  # noqa: E402
from harness.training.loaders import data_source, loaders
from harness.training.plan import prepare, training_class_weights  # noqa: E402
from harness.training.rng import loader_generators, seed_everything  # noqa: E402
from harness.training.trainer import Trainer

HOG = "import time\nend = time.monotonic() + 3600\nwhile time.monotonic() < end:\n    pass\n"


def torch_default_threads() -> int:
    """What PyTorch starts a fresh process with (this one's count may have been changed)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


@contextlib.contextmanager
def cpu_hog(on: bool):
    """One process spinning on a core for the duration, killed whatever happens."""
    proc = subprocess.Popen([sys.executable, "-c", HOG]) if on else None
    try:
        if proc:
            time.sleep(0.5)  # spinning before the first arm starts
        yield
    finally:
        if proc:
            proc.kill()
            proc.wait()


def env(home: Path) -> dict:
    out = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    return out | {"HARNESS_HOME": str(home), "COLUMNS": "200"}


def run_arm(home: Path, cwd: Path, n_threads: int, args) -> dict:
    """One `harness run` in its own MLflow store (cwd), sharing the demo and cache of `home`."""
    cwd.mkdir(parents=True)
    cmd = [sys.executable, "-m", "harness", "run", "v9", "--fold", "0", "--profile", "smoke",
           "--set", f"train.epochs={args.epochs}", "--set", f"train.threads={n_threads}"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env(home), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    # the store is this run's alone (its experiment is named after the data source: demo or not)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    epochs = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "time/epoch_s"),
                                      key=lambda m: m.step)]
    ba = sorted(client.get_metric_history(run.info.run_id, "val/balanced_accuracy"), key=lambda m: m.step)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("threads:")), "")
    return {"threads": int(run.data.params["train.threads_used"]), "epoch_s": [round(s, 3) for s in epochs],
            "mean_epoch_s": round(statistics.mean(epochs), 3), "wall_s": round(wall, 2),
            "busy_elsewhere_at_start": run.data.tags["harness.cpu_busy_elsewhere"],
            "final_ba": round(ba[-1].value, 4), "line": line}


def thread_arms(home: Path, work: Path, args, default: int) -> list[dict]:
    counts = {"default": default, "one": 1, "chosen": 0}
    rows = []
    for c, case in enumerate(args.cases):
        with cpu_hog(case == "hog"):
            for r in range(args.rounds):
                k = (r + c) % len(args.arms)  # rotated each round, and the second case starts elsewhere
                for arm in args.arms[k:] + args.arms[:k]:
                    row = {"case": case, "round": r, "arm": arm, "setting": counts[arm]}
                    row |= run_arm(home, work / f"{case}-{r}-{arm}", counts[arm], args)
                    rows.append(row)
                    print(f"{case:4s} round {r} {arm:7s} train.threads={counts[arm]} -> {row['threads']} threads: "
                          f"{row['epoch_s']} s/epoch (busy elsewhere at start {row['busy_elsewhere_at_start']}), "
                          f"final BA {row['final_ba']}", flush=True)
    return rows


def summarise(rows: list[dict], arms: list[str]) -> list[dict]:
    """Per case: each arm's median seconds per epoch over the rounds, and its ratio to the better of
    default and one thread (the target for 'chosen': at most 1)."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        med = {a: statistics.median(r["mean_epoch_s"] for r in rows if r["case"] == case and r["arm"] == a)
               for a in arms}
        best = min(med[a] for a in ("default", "one") if a in med) if {"default", "one"} & set(med) else None
        for a in arms:
            used = sorted({r["threads"] for r in rows if r["case"] == case and r["arm"] == a})
            out.append({"case": case, "arm": a, "threads_used": used, "median_epoch_s": round(med[a], 3),
                        "ratio_to_best_of_default_and_one": round(med[a] / best, 3) if best else None})
    return out


# ---------------------------------------------------------------------------- trainer overhead
def overhead(args) -> dict:
    console = Console(file=io.StringIO())
    plan = prepare("v9", 0, args.data_dir, "smoke", None, {}, console)
    cfg = plan.cfg
    choice = threads.choose(0, cfg.data.num_workers)
    before = torch.get_num_threads(), cv2.getNumThreads()
    threads.apply(choice.compute, cfg.data.num_workers)  # one count for every arm, as a run applies it
    with tempfile.TemporaryDirectory() as tmp:
        source = data_source(plan, console, Path(tmp) / "unreadable.tsv")
    train_loader, val_loader, _ = loaders(plan, torch.device("cpu"), source)
    seed_everything(cfg.train.seed)
    model = plan.variant.build_model(cfg)
    init = copy.deepcopy(model.state_dict())
    loss_fn = build_loss(cfg.loss, training_class_weights(plan))
    gens = loader_generators(train_loader)
    gen_states = [g.get_state() for g in gens]

    def fresh() -> Trainer:
        """The same start for every arm: weights, global RNG, loader order; a new optimiser."""
        model.load_state_dict(init)
        for g, state in zip(gens, gen_states, strict=True):
            g.set_state(state)
        seed_everything(cfg.train.seed)
        return Trainer(cfg, model, loss_fn, plan.variant.predict, train_loader, val_loader, [])

    def trainer_epoch() -> float:
        t = fresh()
        start = time.perf_counter()
        t.train_one_epoch()
        return time.perf_counter() - start

    def bare_epoch(same_work: bool) -> float:
        t = fresh()
        opt, clip = t.optimizer, cfg.train.grad_clip
        model.train()
        train_loader.dataset.set_epoch(0)
        start = time.perf_counter()
        for batch in train_loader:
            out = model(batch["image"], batch["level"])
            loss = sum(loss_fn(out, batch).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if same_work and clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if same_work:
                t.scheduler.step()
        return time.perf_counter() - start

    arms = {"trainer": trainer_epoch, "bare": lambda: bare_epoch(False), "bare_same_work": lambda: bare_epoch(True)}
    names = list(arms)
    times: dict[str, list[float]] = {n: [] for n in names}
    bare_epoch(False)  # untimed: page cache, allocator, OpenMP pool warm
    for r in range(args.overhead_repeats):
        for name in names[r % 3:] + names[:r % 3]:
            times[name].append(arms[name]())
            print(f"overhead repeat {r} {name:14s} {times[name][-1]:.2f} s", flush=True)
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])
    med = {n: statistics.median(v) for n, v in times.items()}
    return {"steps": len(train_loader), "batch_size": cfg.train.batch_size, "threads": choice.compute,
            "grad_clip": cfg.train.grad_clip, "mixup_prob": cfg.train.mixup_prob,
            "seconds": {n: [round(s, 3) for s in v] for n, v in times.items()},
            "median_s": {n: round(v, 3) for n, v in med.items()},
            "trainer_over_bare": round(med["trainer"] / med["bare"], 3),
            "trainer_over_bare_same_work": round(med["trainer"] / med["bare_same_work"], 3)}


@contextlib.contextmanager
def harness_home(home: Path):
    """HARNESS_HOME for this process too (the overhead part and the cache build run here), then back."""
    before = os.environ.get("HARNESS_HOME")
    os.environ["HARNESS_HOME"] = str(home)
    try:
        yield home
    finally:
        if before is None:
            os.environ.pop("HARNESS_HOME", None)
        else:
            os.environ["HARNESS_HOME"] = before


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3,
                   help="runs of every arm per case, the order rotated (3: each arm once in each place)")
    p.add_argument("--cases", nargs="+", default=["idle", "hog"], choices=["idle", "hog"])
    p.add_argument("--arms", nargs="+", default=["default", "one", "chosen"], choices=["default", "one", "chosen"])
    p.add_argument("--overhead-repeats", type=int, default=3, help="epochs of each overhead arm (0: skip)")
    p.add_argument("--data-dir", help="dataset root (default: the built-in demo, generated in the temporary home)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "threads.json"))
    args = p.parse_args(argv)
    default = torch_default_threads()
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp, harness_home(Path(tmp) / "home") as home:
        if not args.data_dir:
            subprocess.run([sys.executable, "-m", "harness", "data", "demo"], env=env(home), check=True,
                           capture_output=True)
        # the cache is built once, before anything is timed
        with tempfile.TemporaryDirectory() as log:
            data_source(prepare("v9", 0, args.data_dir, "smoke", None, {}, Console(file=io.StringIO())),
                        Console(file=io.StringIO()), Path(log) / "u.tsv")
        rows = thread_arms(home, Path(tmp) / "runs", args, default)
        over = overhead(args) if args.overhead_repeats else None
    report = {"command": "python benchmarks/threads.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu_cores": threads.usable_cores(), "torch_default_threads": default,
              "python": platform.python_version(), "torch": torch.__version__, "epochs": args.epochs,
              "summary": summarise(rows, args.arms), "runs": rows, "overhead": over}
    Path(args.out).write_text(json.dumps(report, indent=1))
    for s in report["summary"]:
        print(f"{s['case']:4s} {s['arm']:7s} threads {s['threads_used']} {s['median_epoch_s']:8.2f} s/epoch  "
              f"ratio to best of default/one {s['ratio_to_best_of_default_and_one']}")
    if over:
        print(f"trainer / bare {over['trainer_over_bare']}, trainer / bare with the same work "
              f"{over['trainer_over_bare_same_work']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
