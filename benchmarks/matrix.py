"""Run-matrix benchmark: a matrix of cells in one `harness run` process against the same cells as
separate `harness run` processes, side by side in one run, on the demo data.

    python benchmarks/matrix.py [--cells 4] [--epochs 2] [--rounds 2] [--out benchmarks/matrix.json]

Cells are folds 0.. with seed 42 (smoke profile, 2 threads pinned); the arms alternate over
`--rounds`. Reports wall seconds of each arm (median over rounds), their ratio (the matrix's
overhead or saving against separate processes), cells per hour, and whether both arms gave the same
per-cell BA.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient


def _harness(args: list[str], cwd: Path, home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    env["HARNESS_HOME"] = str(home)
    subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _cell_ba(cwd: Path) -> dict[str, float]:
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return {r.data.tags["harness.fold"]: round(r.data.metrics["best/balanced_accuracy"], 6) for r in runs
            if r.data.tags.get("harness.kind") == "training"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    a = p.parse_args()
    common = ["--seed", "42", "--set", f"train.epochs={a.epochs}", "--set", "train.threads=2"]
    with tempfile.TemporaryDirectory(prefix="bench-matrix-") as tmp:
        tmp = Path(tmp)
        home = tmp / "home"  # one demo and one preprocessing cache for both arms, built before timing
        (tmp / "warm").mkdir()
        _harness(["run", "v9", "--fold", "0", "--set", "train.epochs=1"], tmp / "warm", home)
        arms = {"matrix": {"seconds": []}, "separate": {"seconds": []}}
        for r in range(a.rounds):  # the arms alternate, so a change in the machine's load hits both
            for arm in ("matrix", "separate") if r % 2 == 0 else ("separate", "matrix"):
                cwd = tmp / f"{arm}{r}"
                cwd.mkdir()
                start = time.perf_counter()
                if arm == "matrix":
                    _harness(["run", "v9", "--fold", ",".join(map(str, range(a.cells))), *common], cwd, home)
                else:
                    for fold in range(a.cells):
                        _harness(["run", "v9", "--fold", str(fold), *common], cwd, home)
                arms[arm]["seconds"].append(round(time.perf_counter() - start, 1))
                arms[arm]["cell_ba"] = _cell_ba(cwd)
                print(f"round {r + 1} {arm}: {arms[arm]['seconds'][-1]} s", flush=True)
        for arm in arms.values():
            arm["median_seconds"] = statistics.median(arm["seconds"])
    out = {"command": f"python benchmarks/matrix.py --cells {a.cells} --epochs {a.epochs} --rounds {a.rounds}",
           "cells": a.cells, "epochs_per_cell": a.epochs, **arms,
           "matrix_over_separate": round(arms["matrix"]["median_seconds"] / arms["separate"]["median_seconds"], 3),
           "cells_per_hour_matrix": round(3600 * a.cells / arms["matrix"]["median_seconds"], 1),
           "same_cell_ba": arms["matrix"]["cell_ba"] == arms["separate"]["cell_ba"]}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
