"""The README's main job, exactly as a user types it: `harness run v9 --fold 0` with no other argument.

It generates the demo on first use, uses the smoke profile, and must learn the demo's stenosis
signal: best validation BA at least 0.60 (chance is 0.33). This is the project's end-to-end check
that the data, the pipeline and the trainer fit together, so it runs the full two minutes.
"""
import pytest
from conftest import harness_cli
from mlflow import MlflowClient


@pytest.mark.slow
def test_main_job_learns_the_demo(tmp_path):
    res = harness_cli("run", "v9", "--fold", "0", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "built-in demo dataset" in res.stdout and "profile smoke" in res.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rsna-spinal_canal_stenosis-demo")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["harness.data_source"] == "demo" and run.data.tags["harness.profile"] == "smoke"
    assert run.data.metrics["best/balanced_accuracy"] >= 0.60, run.data.metrics
