"""Behaviour fingerprint of a checkout, to show that a refactoring changed nothing a user sees.

    python benchmarks/fingerprint.py record OUT          # harness variants --json + 3-epoch runs of v4, v6, v7, v9
    python benchmarks/fingerprint.py compare BEFORE AFTER

`record` runs the installed `harness` in OUT (its own store and demo data; 2 threads pinned, so the
numbers are bit-reproducible on one machine). `compare` says, per variant, which tags, metrics,
artifact names, run names and descriptions differ; timings, paths and the git commit are left out.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

VARIANTS = ("v4", "v6", "v7", "v9")
VOLATILE_TAGS = ("harness.checkpoint_dir", "harness.git_commit", "mlflow.source", "mlflow.user",
                 "harness.cpu_busy_elsewhere")
VOLATILE_METRICS = ("time/epoch_s", "throughput/train_samples_per_s")


def record(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HARNESS_HOME=str(out / "home"))
    listed = subprocess.run(["harness", "variants", "--json"], capture_output=True, text=True, cwd=out, env=env,
                            check=True)
    (out / "variants.json").write_text(listed.stdout)
    for i, name in enumerate(VARIANTS, 1):
        print(f"[{i}/{len(VARIANTS)}] harness run {name} --fold 0 (3 epochs)", flush=True)
        subprocess.run(["harness", "run", name, "--fold", "0", "--set", "train.threads=2", "--set", "train.epochs=3"],
                       cwd=out, env=env, check=True, capture_output=True)


def _runs(folder: Path) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    found = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            found[run.data.tags["harness.variant"]] = dict(
                tags={k: v for k, v in run.data.tags.items() if not k.startswith(VOLATILE_TAGS)},
                metrics={k: v for k, v in run.data.metrics.items() if k not in VOLATILE_METRICS},
                params={k: v for k, v in run.data.params.items() if k != "data_dir"},
                artifacts=sorted(a.path for a in client.list_artifacts(run.info.run_id)), name=run.info.run_name)
    return found


def _differ(a, b) -> bool:
    return not (a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)))


def compare(before: Path, after: Path) -> int:
    same = (before / "variants.json").read_text() == (after / "variants.json").read_text()
    print(f"harness variants --json: {'identical' if same else 'DIFFERENT'}")
    a, b, bad = _runs(before), _runs(after), not same
    for variant in sorted(set(a) | set(b)):
        if variant not in a or variant not in b:
            print(f"{variant}: only in {'before' if variant in a else 'after'}")
            bad = True
            continue
        diffs = []
        for part in ("tags", "metrics", "params"):
            x, y = a[variant][part], b[variant][part]
            diffs += [f"{part} {k}" for k in sorted(set(x) | set(y)) if _differ(x.get(k), y.get(k))]
        diffs += [part for part in ("artifacts", "name") if a[variant][part] != b[variant][part]]
        counts = ", ".join(f"{len(a[variant][p])} {p}" for p in ("tags", "metrics", "params", "artifacts"))
        print(f"{variant}: {counts}: " + ("identical" if not diffs else "DIFFERENT in " + ", ".join(diffs)))
        bad |= bool(diffs)
    return int(bad)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(Path(sys.argv[2]).resolve())
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
