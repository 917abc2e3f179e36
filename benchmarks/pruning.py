"""Pruning benchmark (issue 6): one demo study run twice, with the median
pruner and without, side by side; records the training epochs each spent and the best value each
reached.

    python benchmarks/pruning.py [--trials 8] [--epochs 6] [--out benchmarks/pruning.json]

It runs `harness tune` on the built-in demo data (smoke profile) in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

SPEC = """
name: {name}
variant: v9
fold: 0
objective: {{metric: best/balanced_accuracy, direction: maximize}}
trials: {trials}
sampler: {{name: tpe, seed: 42}}
pruner: {pruner}
fixed: {{train.epochs: {epochs}, train.warmup_epochs: 1, train.patience: {epochs}, data.tta: [none]}}
space:
  loss.class_weights[1]: {{type: float, low: 1.0, high: 10.0}}
  loss.class_weights[2]: {{type: float, low: 1.0, high: 12.0}}
  train.lr_head: {{type: float, low: 1.0e-4, high: 3.0e-3, log: true}}
"""
PRUNERS = {"median": "{name: median, n_startup_trials: 2, n_warmup_steps: 2}", "none": "{name: none}"}


def run_study(workdir: Path, name: str, pruner: str, trials: int, epochs: int, home: str | None) -> dict:
    spec = workdir / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, trials=trials, epochs=epochs, pruner=pruner))
    env = dict(os.environ, **({"HARNESS_HOME": home} if home else {}))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", "tune", str(spec)], cwd=workdir, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    study = optuna.load_study(study_name=name,
                              storage=JournalStorage(JournalFileBackend(str(spec.with_suffix(".journal")))))
    epochs_run = sum(int(t.user_attrs.get("epochs", 0)) for t in study.trials)
    states = [t.state.name for t in study.trials]
    return {"trials": len(study.trials), "pruned": states.count("PRUNED"), "complete": states.count("COMPLETE"),
            "epochs_trained": epochs_run, "epochs_budget": trials * epochs, "best_value": study.best_value,
            "best_trial": study.best_trial.number, "seconds": round(seconds, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--harness-home", help="reuse a folder holding the demo data and its cache")
    ap.add_argument("--out", default=str(Path(__file__).with_name("pruning.json")))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="harness-prune-") as tmp:
        results = {name: run_study(Path(tmp), f"prune_{name}", pruner, args.trials, args.epochs, args.harness_home)
                   for name, pruner in PRUNERS.items()}
    pruned, full = results["median"], results["none"]
    results["epochs_saved"] = full["epochs_trained"] - pruned["epochs_trained"]
    results["epochs_ratio"] = pruned["epochs_trained"] / full["epochs_trained"]
    results["best_value_difference"] = pruned["best_value"] - full["best_value"]
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
