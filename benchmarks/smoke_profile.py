"""Why the smoke profile has its two rules: `harness run v9 --fold 0` on the built-in demo (seed 42)
with the notebook's learning rates and augmentation put back one at a time, side by side.

    python benchmarks/smoke_profile.py [--out benchmarks/smoke_profile.json]

Each arm is a real `harness run` in one temporary folder (one demo, one store); the figures are
the selected epoch's (best/*). The README's "Profiles" paragraph quotes them. The thread count is
pinned at 2, what `harness run` chooses on an idle 2-core machine: the count changes a run's last
bits, and so, over 8 epochs, its BA (README "Threads").
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

from mlflow import MlflowClient

V9_AUGMENT = ["--set", "data.augment=v8", "--set", "data.crop_jitter=4"]
NOTEBOOK_LR = ["--set", "train.lr_head=1e-4", "--set", "train.lr_backbone=1e-5"]
ARMS = {
    "notebook rates, v9's augmentation": NOTEBOOK_LR + V9_AUGMENT,
    "1e-3, v9's augmentation": V9_AUGMENT,
    "1e-4, no augmentation": ["--set", "train.lr_head=1e-4", "--set", "train.lr_backbone=1e-4"],
    "smoke as shipped": [],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="smoke-profile-") as tmp:
        env = dict(os.environ, HARNESS_HOME=str(Path(tmp) / ".harness"))
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("RSNA_DATA_DIR", None)
        client = MlflowClient(f"sqlite:///{Path(tmp) / 'mlruns' / 'mlflow.db'}")
        for name, sets in ARMS.items():
            command = ["harness", "run", "v9", "--fold", "0", *sets, "--set", "train.threads=2"]
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "harness", *command[1:]], cwd=tmp, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            run = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                     order_by=["attributes.start_time DESC"], max_results=1)[0]
            m = run.data.metrics
            rows.append({"arm": name, "command": " ".join(command), "best_epoch": int(m["best/epoch"]),
                         "balanced_accuracy": round(m["best/balanced_accuracy"], 3),
                         "recalls": [round(m[f"best/recall/{k}"], 3) for k in ("normal_mild", "moderate", "severe")],
                         "competition_score_spinal": round(m["best/competition_score_spinal"], 4),
                         "tta_balanced_accuracy": round(m.get("tta/balanced_accuracy", float("nan")), 3),
                         "threads": run.data.tags.get("harness.threads"),
                         "seconds": round(seconds, 1)})
            print(json.dumps(rows[-1]))
    Path(args.out).write_text(json.dumps({"runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
