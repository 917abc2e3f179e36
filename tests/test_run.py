"""A complete `harness run` on demo data, its MLflow content read back from the real SQLite store."""
import json
import socket

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import harness_cli, harness_ui
from mlflow import MlflowClient

from harness.core.competition import CLASS_KEYS

EPOCHS = 2


@pytest.fixture(scope="module")
def finished_run(demo_root, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("run")
    res = harness_cli("run", "v9", "--fold", "0", "--data-dir", str(demo_root), "--profile", "smoke",
                      "--set", f"train.epochs={EPOCHS}", "--set", "train.swa_start_epoch=1", "--set",
                      "train.lr_backbone=2e-4",
                      "--set", "data.augment=v8", "--set", "data.crop_jitter=4", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rsna-spinal_canal_stenosis")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return cwd, client, runs[0], res.stdout


@pytest.mark.slow
def test_run_is_finished_with_tags_and_params(finished_run):
    cwd, client, run, out = finished_run
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"v9-fold0-seed42 · BA {run.data.metrics['best/balanced_accuracy']:.3f}"  # how it ended
    tags = run.data.tags
    for key in ("variant", "fold", "seed", "profile", "data_source", "data_fingerprint", "fold_fingerprint",
                "git_commit", "version", "gate_met"):
        assert f"harness.{key}" in tags
    assert tags["harness.variant"] == "v9" and tags["harness.profile"] == "smoke"
    assert tags["harness.data_source"] == "kaggle"  # an explicit --data-dir
    assert run.data.params["loss.class_weights"] == "(1.0, 4.0, 6.0)"
    assert run.data.params["train.epochs"] == str(EPOCHS)
    assert run.data.params["data.augment"] == "v8"  # the training augmentation path ran


def test_every_epoch_metric_is_logged(finished_run):
    cwd, client, run, out = finished_run
    names = ["train/loss", "val/loss", "val/balanced_accuracy", "val/weighted_log_loss",
             "val/competition_score_spinal", "time/epoch_s", "throughput/train_samples_per_s",
             *[f"val/{kind}/{c}" for kind in ("recall", "pred_count") for c in CLASS_KEYS],
             *[f"lr/{g}" for g in ("backbone", "feature_proj", "gru", "attention", "level_embed", "classifier")]]
    for name in names:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == list(range(1, EPOCHS + 1)), name
        assert all(np.isfinite(m.value) for m in history), name
    ba = client.get_metric_history(run.info.run_id, "val/balanced_accuracy")
    recalls = [client.get_metric_history(run.info.run_id, f"val/recall/{c}") for c in CLASS_KEYS]
    for e in range(EPOCHS):  # BA is the mean of the three recalls
        assert ba[e].value == pytest.approx(np.mean([r[e].value for r in recalls]))
    m = run.data.metrics
    assert "best/balanced_accuracy" in m and "tta/balanced_accuracy" in m and "best/epoch" in m
    # lr: each group has its own rate, and SWALR from epoch 1 moves both towards swa_lr (5e-6)
    lr_b = client.get_metric_history(run.info.run_id, "lr/backbone")
    lr_h = client.get_metric_history(run.info.run_id, "lr/classifier")
    assert lr_b[0].value == pytest.approx(lr_h[0].value / 5)
    assert abs(lr_h[1].value - 5e-6) < abs(lr_h[0].value - 5e-6)
    assert "epoch  2/2" in out and "BA" in out


def test_artifacts_and_predictions(finished_run):
    cwd, client, run, out = finished_run
    rid = run.info.run_id
    paths = {a.path for a in client.list_artifacts(rid)} | {a.path for a in client.list_artifacts(rid, "checkpoint")}
    assert {"config.yaml", "val_predictions.csv", "confusion_matrix.png", "training_curves.png"} <= paths
    assert any(p.startswith("checkpoint/") and p.endswith(".pt") for p in paths)
    local = client.download_artifacts(rid, "val_predictions.csv", str(cwd))
    preds = pd.read_csv(local, keep_default_na=False)
    assert list(preds.columns) == ["study_id", "level", "label", *CLASS_KEYS, "prediction", "source", "reason"]
    preds = preds[preds["source"] == "model"]
    assert np.allclose(preds[list(CLASS_KEYS)].sum(1), 1, atol=1e-4)
    assert (preds["prediction"] == preds[list(CLASS_KEYS)].to_numpy().argmax(1)).all()
    recall_n = ((preds.prediction == 0) & (preds.label == 0)).sum() / max((preds.label == 0).sum(), 1)
    assert recall_n == pytest.approx(run.data.metrics["best/recall/normal_mild"])
    ckpt = torch.load(client.download_artifacts(rid, [p for p in paths if p.endswith(".pt")][0], str(cwd)),
                      weights_only=True)
    assert ckpt["config"]["variant"] == "v9" and "model" in ckpt
    # the folds table is the run's dataset input
    assert any(d.dataset.name.startswith("folds-") for d in client.get_run(rid).inputs.dataset_inputs)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, from the kernel's own table (Linux)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _other_local_ipv4() -> set[str]:
    """This machine's non-loopback IPv4 addresses that can be found without extra packages."""
    ips = set()
    try:
        ips |= {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
            ips.add(s.getsockname()[0])
        except OSError:
            pass
    return {ip for ip in ips if not ip.startswith("127.") and ip != "0.0.0.0"}


@pytest.mark.slow
def test_ui_serves_the_run_on_localhost(finished_run):
    """`harness ui` is a real `mlflow server` on 127.0.0.1, reading the same store."""
    import urllib.request

    cwd, _, run, _ = finished_run
    with harness_ui(cwd) as port:
        remote = MlflowClient(f"http://127.0.0.1:{port}")
        got = remote.get_run(run.info.run_id)
        assert got.info.status == "FINISHED"
        assert got.data.metrics["best/balanced_accuracy"] == run.data.metrics["best/balanced_accuracy"]
        assert "config.yaml" in {a.path for a in remote.list_artifacts(run.info.run_id)}
        # the server's own artifact listing, over HTTP
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/artifacts/list?run_id={run.info.run_id}"
        with urllib.request.urlopen(url, timeout=10) as r:
            listed = {f["path"] for f in json.load(r)["files"]}
        assert {"config.yaml", "val_predictions.csv", "checkpoint"} <= listed
        # the experiment is of the UI's model-training kind (runs table), not a GenAI one (traces)
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=rsna-spinal_canal_stenosis"
        with urllib.request.urlopen(url, timeout=10) as r:
            tags = {t["key"]: t["value"] for t in json.load(r)["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        assert _listening_addresses(port) == {"127.0.0.1"}
        for ip in _other_local_ipv4():  # and nothing answers on the machine's other addresses
            with pytest.raises(OSError):
                socket.create_connection((ip, port), timeout=2).close()


@pytest.mark.slow
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_unreadable_slice_is_a_blank_counted_and_reported(demo_root, tmp_path, use_cache):
    """A truncated DICOM never stops a run: it becomes a blank slice, data/unreadable_slices counts
    it (also when DataLoader workers read it) and the run ends with a line naming it."""
    import shutil

    from harness.data.rsna import load_samples

    root = shutil.copytree(demo_root, tmp_path / "data")
    row = load_samples(root).samples.iloc[0]
    broken = root / "train_images" / str(row.study_id) / str(row.series_id) / f"{row.instance_number + 1}.dcm"
    broken.write_bytes(broken.read_bytes()[:2000])
    cwd = tmp_path / "work"
    cwd.mkdir()
    res = harness_cli("run", "v9", "--data-dir", str(root), "--profile", "smoke", "--set", "train.epochs=1",
                      "--set", "data.tta=[none]",
                      "--set", f"data.cache={str(use_cache).lower()}", "--set", "data.num_workers=2", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 unreadable DICOM file(s) were read as blank slices" in res.stdout and str(broken) in res.stdout
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("rsna-spinal_canal_stenosis").experiment_id])[0]
    assert run.data.metrics["data/unreadable_slices"] == 1
    listed = client.download_artifacts(run.info.run_id, "unreadable_slices.tsv", str(tmp_path))
    assert open(listed).read().startswith(f"{broken}\t")
