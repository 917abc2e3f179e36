"""`harness ablate` end to end on the demo, with a known answer: v4 against v4kat, a copy with two factors
changed, the model harmlessly (another initialisation) and the pixels harmfully (a window that flattens every
slice). The ablation pins the loss on the pixels, calls the model indistinguishable, reuses the arms trained
before it, resumes after a stop, and leaves its parent run and tagged arms in MLflow; `harness compare` on
the arms gives the same answers at version level."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import harness_cli

# v4 learns the demo in 2 smoke epochs (BA 0.6-0.9 per fold); five folds, one seed: the flat window costs
# about 40 points, and the version-level interval of a difference is about +-15 there (3 folds leave 2 df: unresolved)
COMMON = ["--fold", "all", "--profile", "smoke", "--set", "train.epochs=2", "--set", "train.threads=2"]
BASE, COPY = "v4", "v4kat"
ARMS = ["v4", "v4kat", "v4+v4kat:pixels", "v4+v4kat:model"]


def _benchmark():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "ablation.py"
    spec = importlib.util.spec_from_file_location("bench_ablation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runs(workdir: Path, kind: str | None = None) -> list:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return [r for r in runs if kind is None or r.data.tags.get("harness.kind") == kind]


def _ablate_until(workdir: Path, env: dict, line: str) -> subprocess.CompletedProcess:
    """`harness ablate` stopped with SIGTERM in the first epoch it trains after it prints `line`."""
    full = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    full |= {"HARNESS_HOME": str(workdir / ".harness"), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"} | env
    proc = subprocess.Popen([sys.executable, "-m", "harness", "ablate", BASE, COPY, *COMMON], cwd=workdir, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    seen = []
    for text in proc.stdout:
        seen.append(text)
        if any(line in t for t in seen) and text.startswith("epoch"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, err)


@pytest.mark.slow
def test_known_answer_ablation_reuses_resumes_and_is_tracked(workdir):
    env = _benchmark().install(workdir / "site")
    pre = harness_cli("run", BASE, *COMMON, cwd=workdir, env=env)  # arm A trained before the ablation exists
    assert pre.returncode == 0, pre.stderr[-2000:]
    v4_runs = {r.info.run_id for r in _runs(workdir, "training")}

    dry = harness_cli("ablate", BASE, COPY, *COMMON, "--dry-run", cwd=workdir, env=env)
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"arm  1  v4 .* 5/5 cells trained", dry.stdout), dry.stdout
    assert "4 arms x 5 folds x 1 seed = 20 runs, 15 to train; about" in dry.stdout
    assert "recorded seconds per epoch: v4" in dry.stdout
    assert len(_runs(workdir)) == 6  # the dry run trained and logged nothing

    stopped = _ablate_until(workdir, env, "arm 3/4")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "the same `harness ablate` command continues it" in stopped.stderr
    parent = re.search(r"parent run (\w+)", stopped.stdout).group(1)
    assert MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}").get_run(parent).info.status == "KILLED"

    res = harness_cli("ablate", BASE, COPY, *COMMON, cwd=workdir, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"parent run {parent}" in res.stdout  # the stopped ablation goes on in its own parent
    assert "arm 1/4: v4 (A): every cell trained before, reused" in res.stdout
    assert "arm 2/4: v4kat (B): every cell trained before, reused" in res.stdout
    assert "resuming run" in res.stdout  # the cell the stop interrupted continues from its checkpoint

    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.tags["harness.kind"] == "ablation"
    artifacts = {f.path for f in client.list_artifacts(parent)}
    assert {"ablation.json", "ablation.md", "ablation.csv", "waterfall.png"} <= artifacts
    result = json.loads(Path(client.download_artifacts(parent, "ablation.json", str(workdir))).read_text())
    rows = {r["factor"]: r for r in result["rows"]}
    assert result["epoch"] == "last" and result["budget"] == "5 folds x 1 seed"
    assert rows["pixels"]["verdict"].startswith("lowers BA both ways"), rows["pixels"]
    assert rows["pixels"]["leave_one_in"]["estimate"] < -0.15 and rows["pixels"]["leave_one_out"]["estimate"] < -0.15
    assert rows["model"]["verdict"].startswith("indistinguishable"), rows["model"]
    assert not rows["model"]["interacts"] and not rows["pixels"]["interacts"]

    # every arm is a child matrix tagged with the ablation and its factor; A's was trained before and reused
    training = _runs(workdir, "training")
    assert v4_runs <= {r.info.run_id for r in training} and len(training) == 20
    arms = {r.data.tags["harness.variant"]: r for r in _runs(workdir, "matrix")}
    assert sorted(arms) == sorted(ARMS)
    for name in ARMS[1:]:
        tags = arms[name].data.tags
        assert tags["mlflow.parentRunId"] == parent and tags["harness.ablation"] == run.data.tags["harness.ablation"]
    assert arms["v4+v4kat:pixels"].data.tags["harness.factor"] == "pixels"
    mixed = [r for r in training if r.data.tags["harness.variant"] == "v4+v4kat:pixels"]
    assert len(mixed) == 5 and all(r.data.tags["harness.base"] == "v4" and r.data.tags["harness.donor"] == COPY
                                   and r.data.tags["harness.factors"] == "pixels" for r in mixed)

    again = harness_cli("ablate", BASE, COPY, *COMMON, cwd=workdir, env=env)
    assert again.returncode == 0 and "is FINISHED" in again.stdout and "nothing to train" in again.stdout
    assert len(_runs(workdir, "training")) == 20 and len(_runs(workdir, "ablation")) == 1

    # compare on the arms: the twin (the model factor alone) is indistinguishable, the flat window lower
    cmp = harness_cli("compare", BASE, "v4+v4kat:model", "v4+v4kat:pixels", "--fold", "all", "--json",
                      cwd=workdir, env=env)
    assert cmp.returncode == 0, cmp.stderr
    level = {r["variant"]: r for r in json.loads(cmp.stdout)["version_level"]["rows"]}
    assert "indistinguishable at this budget" in level["v4+v4kat:model"]["verdict"]
    assert level["v4+v4kat:pixels"]["verdict"].startswith("v4+v4kat:pixels scores lower than v4 beyond")
