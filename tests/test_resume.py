"""Fault injection: real `harness run` processes killed with real signals, then resumed; run states
(KILLED, FAILED) in the real MLflow store; and the trainer's own state round trip per variant."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import harness_cli
from mlflow import MlflowClient
from rich.console import Console

from harness.cli import main
from harness.core.errors import UsageError
from harness.losses import build_loss
from harness.training import resume
from harness.training.execute import execute
from harness.training.hooks import BackboneFreeze, CheckpointSelector, DeadClassMonitor, EarlyStopping
from harness.training.loaders import data_source, loaders
from harness.training.plan import prepare, training_class_weights
from harness.training.rng import seed_everything
from harness.training.trainer import Hook, Trainer

FOLD = 3  # the small demo's fold with Moderate and Severe in validation
SETS = ["--set", "train.epochs=4", "--set", "train.swa_start_epoch=2", "--set", "train.batch_size=4",
        "--set", "data.augment=v8", "--set", "data.crop_jitter=4",  # SWA and per-epoch augmentation cross the stop
        # the reference and the stopped run are separate runs: chosen from the free cores, their thread
        # counts (and so their last bits) could differ; a resume keeps its own run's (test_threads.py)
        "--set", "train.threads=1"]
# what can legitimately differ between two identical runs: wall-clock figures
TIMING = ("time/", "throughput/")


def _args(demo_root: Path, variant: str = "v9") -> list[str]:
    return ["run", variant, "--fold", str(FOLD), "--data-dir", str(demo_root), "--profile", "smoke", *SETS]


def _client(cwd: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")


def _runs(cwd: Path):
    client = _client(cwd)
    exp = client.get_experiment_by_name("rsna-spinal_canal_stenosis")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _start(cwd: Path, args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    env.update(HARNESS_HOME=str(cwd / ".harness"), COLUMNS="200")
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def _wait_for_checkpoint(cwd: Path, proc: subprocess.Popen, epochs_done: int, timeout: float = 300) -> Path:
    """Poll the run folder until its resume checkpoint holds `epochs_done` completed epochs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        for path in (cwd / ".harness" / "runs").glob("*/last.pt"):
            try:
                if torch.load(path, weights_only=True)["trainer"]["next_epoch"] >= epochs_done:
                    return path
            except (OSError, RuntimeError, EOFError):  # replaced while we read it
                pass
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def _history(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k))
            for k in run.data.metrics if not k.startswith(TIMING)}


def _predictions(client: MlflowClient, run_id: str, tmp: Path) -> pd.DataFrame:
    return pd.read_csv(client.download_artifacts(run_id, "val_predictions.csv", str(tmp)))


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory):
    """The uninterrupted run every stopped-and-resumed one must reproduce: (client, run, tmp)."""
    cwd = tmp_path_factory.mktemp("reference")
    res = harness_cli(*_args(demo_root), cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = _runs(cwd)
    return _client(cwd), run, cwd


def _assert_same_as_reference(reference, cwd: Path, run_id: str):
    ref_client, ref_run, ref_cwd = reference
    client = _client(cwd)
    want, got = _history(ref_client, ref_run.info.run_id), _history(client, run_id)
    assert set(got) == set(want)
    for key in want:  # every epoch logged once, with exactly the uninterrupted run's value
        assert got[key] == want[key], key
    assert [s for s, _ in got["val/loss"]] == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(_predictions(client, run_id, cwd / "got"),
                                  _predictions(ref_client, ref_run.info.run_id, cwd / "want"))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_runs_metrics(demo_root, tmp_path, reference):
    proc = _start(tmp_path, _args(demo_root))
    ckpt = _wait_for_checkpoint(tmp_path, proc, 2)
    time.sleep(0.4)  # into epoch 3 (an epoch here takes about a second)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (killed,) = _runs(tmp_path)
    assert killed.info.status == "RUNNING"  # a SIGKILL cannot be recorded: the run looks alive
    assert torch.load(ckpt, weights_only=True)["trainer"]["next_epoch"] < 4

    res = harness_cli(*_args(demo_root), "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resuming run {killed.info.run_id}" in res.stdout
    (resumed,) = _runs(tmp_path)  # continued in the same MLflow run, not a new one
    assert resumed.info.run_id == killed.info.run_id
    assert resumed.info.status == "FINISHED" and "harness.resumed_after_epoch" in resumed.data.tags
    _assert_same_as_reference(reference, tmp_path, killed.info.run_id)
    assert not ckpt.parent.exists()  # a FINISHED run's working folder is removed


@pytest.mark.slow
def test_ctrl_c_mid_epoch_saves_there_marks_killed_and_resumes_exactly(demo_root, tmp_path, reference):
    proc = _start(tmp_path, _args(demo_root))
    _wait_for_checkpoint(tmp_path, proc, 1)
    time.sleep(0.4)  # past the epoch's logging (~0.05 s), inside epoch 2's eleven batches (~1 s)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert "Traceback" not in err and "stopping after the current batch" in err
    (run,) = _runs(tmp_path)
    assert run.info.status == "KILLED" and run.data.tags["harness.stop_reason"] == "SIGINT"
    state = torch.load(next((tmp_path / ".harness" / "runs").glob("*/last.pt")), weights_only=True)["trainer"]
    assert state["partial"]["batches"] > 0  # saved between two batches, not at an epoch's end
    assert f"--resume {run.info.run_id}" in out

    res = harness_cli(*_args(demo_root), "--resume", run.info.run_id, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (f"resuming run {run.info.run_id} in epoch {state['next_epoch'] + 1} after batch "
            f"{state['partial']['batches']}") in res.stdout
    assert _client(tmp_path).get_run(run.info.run_id).info.status == "FINISHED"
    _assert_same_as_reference(reference, tmp_path, run.info.run_id)


@pytest.fixture(scope="module")
def stopped_run(demo_root, tmp_path_factory):
    """A v9 run stopped by SIGTERM after its first epoch."""
    cwd = tmp_path_factory.mktemp("stopped")
    proc = _start(cwd, _args(demo_root))
    ckpt = _wait_for_checkpoint(cwd, proc, 1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return cwd, proc.returncode, out, err, ckpt


@pytest.mark.slow
def test_sigterm_marks_the_run_killed_and_keeps_its_checkpoint(stopped_run):
    cwd, code, out, err, ckpt = stopped_run
    assert code == 143 and err.strip().splitlines()[-1] == "stopped by SIGTERM" and "Traceback" not in err, err
    (run,) = _runs(cwd)
    assert run.info.status == "KILLED" and run.data.tags["harness.stop_reason"] == "SIGTERM"
    assert ckpt.is_file() and f"--resume {run.info.run_id}" in out


@pytest.mark.parametrize("case, code, needle", [
    ("other_variant_run", 2, "that run is v9 fold 3, not v4 fold 3"),
    ("other_variant_file", 2, "a checkpoint of v9 fold 3, not v4 fold 3"),
    ("other_config", 2, "config differs from the run's in train.lr_head"),
    ("no_such_run", 2, "--resume 0123456789abcdef: no such run id or checkpoint file"),
    ("not_a_checkpoint", 2, "not a readable harness checkpoint"),
])
def test_resume_refuses_what_does_not_match(stopped_run, demo_root, case, code, needle, monkeypatch, capsys):
    cwd, _, _, _, ckpt = stopped_run
    monkeypatch.chdir(cwd)  # in-process, as the real command's main(): it needs no fresh interpreter
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HARNESS_HOME", str(cwd / ".harness"))
    (run,) = _runs(cwd)
    junk = cwd / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    args = {"other_variant_run": _args(demo_root, "v4") + ["--resume", run.info.run_id],
            "other_variant_file": _args(demo_root, "v4") + ["--resume", str(ckpt)],
            "other_config": _args(demo_root) + ["--set", "train.lr_head=0.5", "--resume", run.info.run_id],
            "no_such_run": _args(demo_root) + ["--resume", "0123456789abcdef"],
            "not_a_checkpoint": _args(demo_root) + ["--resume", str(junk)]}[case]
    returncode = main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert returncode == code and len(lines) == 1 and needle in lines[0], err
    assert [r.info.run_id for r in _runs(cwd)] == [run.info.run_id]  # nothing new, nothing reopened
    assert _client(cwd).get_run(run.info.run_id).info.status == "KILLED"


def test_a_run_being_trained_cannot_be_resumed_by_a_second_process(tmp_path):
    with resume.RunLock(tmp_path, "abc"):
        with pytest.raises(UsageError, match="run abc is being trained by another process"):
            with resume.RunLock(tmp_path, "abc"):
                pass
    with resume.RunLock(tmp_path, "abc"):  # released with its holder
        pass


class _Explode(Hook):
    def after_epoch(self, t):
        if t.next_epoch == 2:
            raise RuntimeError("injected fault")


@pytest.mark.slow
def test_an_exception_marks_the_run_failed_and_the_run_resumes_from_its_checkpoint(demo_root, workdir):
    sets = {"train.epochs": 3, "train.batch_size": 4}
    plan = prepare("v9", FOLD, str(demo_root), "smoke", None, sets, Console(file=io.StringIO()))
    with pytest.raises(RuntimeError, match="injected fault"):
        execute(plan, Console(file=io.StringIO()), hooks=[_Explode()])
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("rsna-spinal_canal_stenosis").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["harness.failure_reason"] == "RuntimeError: injected fault"
    trace = Path(client.download_artifacts(run.info.run_id, "failure/traceback.txt", str(workdir)))
    assert "RuntimeError: injected fault" in trace.read_text() and "in after_epoch" in trace.read_text()

    from harness.training.execute import find_resume
    point = find_resume(plan, run.info.run_id, Console(file=io.StringIO()))
    assert point.epochs_done == 2
    outcome = execute(plan, Console(file=io.StringIO()), resume=point)
    assert outcome.run_id == run.info.run_id and outcome.epochs == 3
    finished = client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags["harness.resumed_after_epoch"] == "2"
    assert "harness.failure_reason" not in finished.data.tags  # the failure is history once resumed


@pytest.mark.slow
def test_a_gate_failure_is_a_failed_run_with_its_reason(demo_root, tmp_path):
    res = harness_cli(*_args(demo_root), "--set", "train.epochs=1", "--set", "train.gate=1.0",
                      "--set", "train.gate_fallback=false", cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "no epoch reached" in lines[0], res.stderr
    (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED" and "no epoch reached" in run.data.tags["harness.failure_reason"]


# ---------------------------------------------------------------- the trainer's own round trip
class _StopAt(Hook):
    """Asks for a stop as a signal handler would, after `batches` batches of epoch `epoch`."""

    def __init__(self, epoch: int, batches: int):
        self.epoch, self.batches = epoch, batches

    def after_step(self, t):
        if t.epoch == self.epoch and t.partial["batches"] == self.batches:
            t.request_stop(KeyboardInterrupt())


def _fit(plan, ckpt: Path, stop_at: tuple[int, int] | None = None, state: dict | None = None,
         scored: bool = False):
    """Train in process with the run's hooks and a checkpoint each epoch; `scored`: with the run's
    competition scorer, as `harness run` trains."""
    cfg = plan.cfg
    seed_everything(cfg.train.seed)
    model = plan.variant.build_model(cfg)
    train, val, _ = loaders(plan, torch.device("cpu"), data_source(plan, Console(file=io.StringIO()),
                                                                   ckpt.parent / "u"))
    selector = CheckpointSelector(ckpt.parent)
    hooks = [BackboneFreeze(), selector, EarlyStopping(), DeadClassMonitor(),
             resume.EpochCheckpoint(ckpt, resume.identity(cfg, "x", plan.data_fp))]
    if stop_at:
        hooks.append(_StopAt(*stop_at))
    t = Trainer(cfg, model, build_loss(cfg.loss, training_class_weights(plan)), plan.variant.predict, train, val, hooks,
                **({"score": plan.scorer()} if scored else {}))
    if state:
        resume.restore(t, state)
    try:
        t.fit()
    except KeyboardInterrupt:
        pass
    return t, selector


@pytest.mark.parametrize("variant", ["v4", "v5", "v7"])  # oversampling, mixup + SWA for eval + BN refresh, freeze
def test_trainer_stopped_mid_epoch_continues_bit_for_bit(demo_root, workdir, variant):
    sets = {"train.epochs": 4, "train.batch_size": 4, "data.augment": "v8", "train.patience": 10}
    sets |= {"train.swa_start_epoch": 2, "train.swa_update_bn": True} if variant == "v5" else {}
    plan = prepare(variant, FOLD, str(demo_root), "smoke", None, sets, Console(file=io.StringIO()))
    straight, straight_sel = _fit(plan, workdir / "a" / "last.pt")
    _fit(plan, workdir / "b" / "last.pt", stop_at=(2, 3))  # mid-epoch, in v5's first SWA epoch
    state = resume.load_checkpoint(workdir / "b" / "last.pt")
    assert state["trainer"]["partial"]["batches"] == 3
    resumed, resumed_sel = _fit(plan, workdir / "b" / "last.pt", state=state)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(straight.result.probs, resumed.result.probs)
    assert straight_sel.selected.epoch == resumed_sel.selected.epoch


def test_compare_ignores_a_run_that_did_not_finish(stopped_run, monkeypatch, capsys):
    cwd = stopped_run[0]
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["compare", "v9", "v4", "--fold", str(FOLD)]) == 2
    assert "no finished run of v9, v4 for fold 3" in capsys.readouterr().err
