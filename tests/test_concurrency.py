"""Two `harness run` processes started together on one fresh store (database and preprocessing cache
created by whichever comes first) both finish with every metric."""
import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient


@pytest.mark.slow
def test_two_runs_at_once_on_a_fresh_store_both_finish_complete(demo_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    env["HARNESS_HOME"] = str(tmp_path / ".harness")
    procs = [subprocess.Popen([sys.executable, "-m", "harness", "run", variant, "--data-dir", str(demo_root),
                               "--profile", "smoke", "--set", "train.epochs=3", "--seed", str(seed)],
                              cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
             for variant, seed in (("v9", 1), ("v4", 2))]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.data.tags["harness.variant"] for r in runs) == ["v4", "v9"]
    for run in runs:
        assert run.info.status == "FINISHED"
        for key in ("val/balanced_accuracy", "val/recall/severe", "train/loss", "val/loss"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3], key
        assert "best/balanced_accuracy" in run.data.metrics
        assert "val_predictions.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
