"""Bad input through the real command: one line on stderr naming the file or key, exit code 2 for a
usage error and 1 for a data error, and no MLflow run left behind."""
import pandas as pd
import pytest
from conftest import editable_copy, harness_cli

from harness.cli import main
from harness.core import competition

BREAKS = {  # a broken copy of the demo's CSVs per data error
    "missing_csv": lambda d: (d / competition.SERIES_CSV).unlink(),
    "missing_column": lambda d: _edit(d, competition.COORDS_CSV, lambda df: df.drop(columns=["x"])),
    "wrong_label": lambda d: _edit(d, competition.TRAIN_CSV, lambda df: df.assign(spinal_canal_stenosis_l1_l2="Mild")),
    "non_integer_id": lambda d: _edit(d, competition.COORDS_CSV, lambda df: df.assign(series_id="../../etc")),
    "no_usable_sample": lambda d: _edit(d, competition.TRAIN_CSV, lambda df: df.assign(
        **{f"spinal_canal_stenosis_{lv}": None for lv in competition.LEVELS})),
}


def _edit(root, name, change):
    change(pd.read_csv(root / name)).to_csv(root / name, index=False)


@pytest.mark.parametrize("args, code, needle", [
    # usage errors: exit 2
    (["run", "v99", "--data-dir", "{demo}"], 2, "unknown variant 'v99'"),
    (["run", "v9", "--fold", "5", "--data-dir", "{demo}"], 2, "fold must be within 0-4"),
    (["run", "v9", "--fold", "-1", "--data-dir", "{demo}"], 2, "fold must be within 0-4"),
    (["run", "v9", "--data-dir", "{demo}", "--set", "train.epoch=3"], 2,
     "unknown config key 'train.epoch' (did you mean train.epochs?)"),
    (["run", "v9", "--data-dir", "{demo}", "--set", "train.epochs=abc"], 2, "train.epochs expects int, got 'abc'"),
    (["run", "v9", "--data-dir", "{demo}", "--set", "train.epochs"], 2, "--set expects key=value, got 'train.epochs'"),
    (["run", "v9", "--data-dir", "{demo}", "--profile", "full"], 2, "model.pretrained=true needs model.weights_file"),
    (["run", "v9", "--data-dir", "{demo}", "--set", "model.weights_file=/no/such.pth"], 2,
     "model.weights_file: no such file"),
    (["run", "v9", "--data-dir", "{demo}", "--profile", "smoke", "--resume", "feedbeef"], 2,
     "--resume feedbeef: no such run id"),
    (["run"], 2, "the following arguments are required: variant"),
    # data errors: exit 1
    (["run", "v9", "--data-dir", "/nonexistent/rsna"], 1, "--data-dir /nonexistent/rsna: no such folder"),
    (["run", "v9", "--data-dir", "{missing_csv}"], 1, "train_series_descriptions.csv: file not found"),
    (["run", "v9", "--data-dir", "{missing_column}"], 1, "train_label_coordinates.csv: missing column 'x'"),
    (["run", "v9", "--data-dir", "{wrong_label}"], 1,
     "train.csv: column 'spinal_canal_stenosis_l1_l2' has the label 'Mild'"),
    (["run", "v9", "--data-dir", "{non_integer_id}"], 1,
     "train_label_coordinates.csv: column 'series_id' must hold integers"),
    (["run", "v9", "--data-dir", "{no_usable_sample}"], 1, "no usable spinal_canal_stenosis samples"),
], ids=lambda v: v if isinstance(v, int) else None)
def test_bad_input(demo_root, workdir, capsys, args, code, needle):
    """In-process through the command's own main() (what `harness` runs), one interpreter for all."""
    broken = {}
    for name, damage in BREAKS.items():
        if any("{" + name + "}" in a for a in args):
            broken[name] = editable_copy(demo_root, workdir / name)
            damage(broken[name])
    args = [a.format(demo=demo_root, **broken) for a in args]
    returncode = main(args)  # a bug would escape as an exception here: the test fails on it
    err = capsys.readouterr().err
    assert returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    _assert_no_run(workdir)


@pytest.mark.parametrize("args, code", [(["run", "v99"], 2), (["run", "v9", "--data-dir", "/nonexistent/rsna"], 1)])
def test_the_real_process_exits_with_the_code_and_one_line(workdir, args, code):
    res = harness_cli(*args, cwd=workdir)
    assert res.returncode == code and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.startswith("error: ")


def _assert_no_run(workdir):
    db = workdir / "mlruns" / "mlflow.db"
    if db.exists():  # the store may exist, but it holds no run
        import mlflow
        client = mlflow.MlflowClient(f"sqlite:///{db}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_unwritable_tracking_folder_is_a_usage_error(demo_root, workdir):
    (workdir / "mlruns").write_text("a file where the tracking folder should be")  # root ignores chmod
    res = harness_cli("run", "v9", "--data-dir", str(demo_root), "--profile", "smoke", "--set", "train.epochs=1",
                      cwd=workdir)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert f"{workdir / 'mlruns'}: cannot create the tracking folder" in lines[0]


def test_data_demo_writes_the_layout_and_refuses_to_overwrite(workdir):
    out = workdir / "d"
    res = harness_cli("data", "demo", "--out", str(out), "--studies", "2", "--seed", "5", cwd=workdir)
    assert res.returncode == 0, res.stderr
    assert (out / competition.TRAIN_CSV).is_file() and (out / competition.TRAIN_IMAGES).is_dir()
    again = harness_cli("data", "demo", "--out", str(out), "--studies", "2", cwd=workdir)
    assert again.returncode == 2 and "folder exists and holds no complete demo dataset" in again.stderr


@pytest.mark.slow
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


def test_damaged_but_usable_data_trains_and_names_each_problem(demo_root, workdir, capsys):
    """A missing series folder, a study with every label empty and a point outside its image do not
    stop a run: each is named in one line before training and counted in the run."""
    import shutil

    from mlflow import MlflowClient

    data = workdir / "damaged"
    shutil.copytree(demo_root, data)
    coords = pd.read_csv(data / competition.COORDS_CSV)
    spinal = coords[coords["condition"] == "Spinal Canal Stenosis"]
    studies = sorted(spinal["study_id"].unique())
    gone, unlabelled, off = studies[:3]
    series = spinal.loc[spinal["study_id"] == gone, "series_id"].iloc[0]
    shutil.rmtree(data / competition.TRAIN_IMAGES / str(gone) / str(series))
    _edit(data, competition.TRAIN_CSV, lambda df: df.assign(**{c: df[c].where(df["study_id"] != unlabelled)
                                                          for c in df.columns if c != "study_id"}))
    moved = spinal.index[spinal["study_id"] == off][0]
    coords.loc[moved, "x"] = 5000.0
    coords.to_csv(data / competition.COORDS_CSV, index=False)

    assert main(["run", "v9", "--data-dir", str(data), "--profile", "smoke", "--set", "train.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert f"(study {unlabelled} has no spinal_canal_stenosis label at any level)" in out
    assert f"(first: series folder {competition.TRAIN_IMAGES}/{gone}/{series} missing)" in out
    assert "1 label point(s) outside their image" in out and "(5000, " in out
    assert f"{competition.TRAIN_IMAGES}/{off}/" in out
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    m = run.data.metrics
    assert run.info.status == "FINISHED" and m["data/points_outside_image"] == 1
    assert m["data/dropped_missing_image"] >= 1 and m["data/dropped_empty_label"] >= 5


# ---- the first hour: what a newcomer meets before any data is read -------------------------------


@pytest.mark.parametrize("args, needle", [
    (["compare", "v4", "v4"], "v4 named twice"),
    (["compare", "v4"], "v4 alone"),
    (["compare", "v4", "v9", "--baseline", "v8"], "--baseline v8: not among the compared variants"),
    (["run", "v9", "--profile", "smoke", "--set", "model.weights_file=/no/such.pth"],
     "model.weights_file: no such file"),
    (["run", "v9", "--profile", "smoke", "--set", "model.weights_file={weights}"], "model.pretrained is false"),
    (["config", "v9", "--set", "train.epoch=3"], "unknown config key 'train.epoch' (did you mean train.epochs?)"),
    (["tune", "{spec}"], "objective.metric 'best/balanced_acuracy' is not a figure a run logs"),
    (["tune", "{spec}"], "did you mean best/balanced_accuracy?"),
])
def test_usage_errors_come_in_one_line_before_torch_mlflow_and_albumentations(workdir, args, needle):
    """A fresh interpreter: the error, exit 2, and none of the heavy libraries imported to say it."""
    import subprocess
    import sys

    (workdir / "weights.pth").write_bytes(b"not really weights")
    spec = workdir / "typo.yaml"
    spec.write_text("name: typo\nvariant: v9\nobjective: {metric: best/balanced_acuracy, direction: maximize}\n"
                    "space:\n  train.lr_head: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}\n")
    args = [a.format(weights=workdir / "weights.pth", spec=spec) for a in args]
    code = ("import sys; from harness.cli import main; rc = main(sys.argv[1:]); "
            "print([m for m in ('torch', 'mlflow', 'albumentations', 'cv2', 'timm') if m in sys.modules]); "
            "raise SystemExit(rc)")
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=workdir, capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert res.stdout.strip() == "[]", res.stdout  # no heavy import happened
    _assert_no_run(workdir)


def test_bare_harness_prints_the_usage_and_every_command(capsys):
    from harness.cli import COMMANDS

    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: harness")
    assert all(f"\n    {name} " in out for name in COMMANDS), out


def test_config_lists_every_key_with_its_value_source_and_doc(capsys):
    import json

    from harness.core.config import Config

    assert main(["config", "v9", "--set", "train.epochs=3", "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(Config().flat())  # every key, in the config's order
    assert all(r["doc"] for r in rows.values()), [k for k, r in rows.items() if not r["doc"]]
    assert rows["train.epochs"]["value"] == 3 and rows["train.epochs"]["source"] == "--set"
    assert rows["model.backbone"] == rows["model.backbone"] | {"value": "test_efficientnet", "source": "profile smoke"}
    assert rows["loss.class_weights"] == rows["loss.class_weights"] | {"value": [1.0, 4.0, 6.0], "source": "variant"}
    assert rows["data.condition"]["source"] == "default"
    assert main(["config", "v9", "--profile", "full", "--set", "model.pretrained=false"]) == 0
    text = capsys.readouterr().out
    assert "data.augment = 'v8'  (variant)" in text and "Training augmentation recipe" in text


def test_data_demo_help_states_its_defaults():
    from harness import cli
    from harness.data import demo

    assert (cli.DEMO_STUDIES, cli.DEMO_SEED) == (demo.DEFAULT_STUDIES, demo.DEFAULT_SEED)
    res = harness_cli("data", "demo", "--help", cwd=__import__("pathlib").Path.cwd())
    text = " ".join(res.stdout.split())
    assert f"(default {demo.DEFAULT_STUDIES})" in text and f"(default {demo.DEFAULT_SEED})" in text
    assert "./.harness/demo" in text


def test_data_check_defaults_to_the_data_a_run_would_use(demo_root, workdir):
    res = harness_cli("data", "check", "--json", cwd=workdir, env={"RSNA_DATA_DIR": str(demo_root)})
    assert res.returncode == 0, res.stderr
    import json
    assert json.loads(res.stdout)["root"] == str(demo_root)
