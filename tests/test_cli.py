"""Bad input through the real command: one line on stderr, exit code 2, and no MLflow run created."""
import pandas as pd
import pytest

from conftest import editable_copy, harness_cli
from harness.data import schema


def _broken_copy(demo_root, tmp_path):
    dst = editable_copy(demo_root, tmp_path / "broken")
    df = pd.read_csv(dst / schema.COORDS_CSV).drop(columns=["x"])
    df.to_csv(dst / schema.COORDS_CSV, index=False)
    return dst


@pytest.mark.parametrize("args, needle", [
    (["run", "v9", "--data-dir", "/nonexistent/rsna"], "--data-dir /nonexistent/rsna: no such folder"),
    (["run", "v99", "--data-dir", "{demo}"], "unknown variant 'v99'"),
    (["run", "v9", "--fold", "5", "--data-dir", "{demo}"], "fold must be within 0-4"),
    (["run", "v9", "--fold", "-1", "--data-dir", "{demo}"], "fold must be within 0-4"),
    (["run", "v9", "--data-dir", "{demo}", "--set", "train.epoch=3"], "unknown config key 'train.epoch' (did you mean train.epochs?)"),
    (["run", "v9", "--data-dir", "{broken}"], "train_label_coordinates.csv: missing column 'x'"),
    (["run", "v9", "--data-dir", "{demo}", "--profile", "full"], "model.pretrained=true needs model.weights_file"),
    (["run", "v9", "--data-dir", "{demo}", "--set", "model.weights_file=/no/such.pth"], "model.weights_file: no such file"),
    (["run"], "the following arguments are required: variant"),
])
def test_bad_input(demo_root, workdir, args, needle):
    broken = _broken_copy(demo_root, workdir)
    args = [a.format(demo=demo_root, broken=broken) for a in args]
    res = harness_cli(*args, cwd=workdir)
    assert res.returncode == 2, res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    db = workdir / "mlruns" / "mlflow.db"
    if db.exists():  # the store may exist, but it holds no run
        import mlflow
        client = mlflow.MlflowClient(f"sqlite:///{db}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_data_demo_writes_the_layout_and_refuses_to_overwrite(workdir):
    out = workdir / "d"
    res = harness_cli("data", "demo", "--out", str(out), "--studies", "2", "--seed", "5", cwd=workdir)
    assert res.returncode == 0, res.stderr
    assert (out / schema.TRAIN_CSV).is_file() and (out / schema.TRAIN_IMAGES).is_dir()
    again = harness_cli("data", "demo", "--out", str(out), "--studies", "2", cwd=workdir)
    assert again.returncode == 2 and "folder exists and holds no complete demo dataset" in again.stderr


def test_unwritable_cache_folder_is_one_line_and_no_run(demo_root, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    res = harness_cli("run", "v9", "--data-dir", str(demo_root), "--profile", "smoke",
                      "--set", f"data.cache_dir={blocker}", cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "preprocessing cache" in lines[0] and str(blocker) in lines[0]
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.exists():  # the store may exist; a run must not
        from mlflow import MlflowClient
        client = MlflowClient(f"sqlite:///{db}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
