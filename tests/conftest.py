"""Shared fixtures: a small real demo dataset (real DICOM files) and an isolated working folder."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core import competition
from harness.data.demo import generate_demo

SMALL_STUDIES = 12
pytest_plugins = ("postgres",)  # the `postgres_url` fixture: a real PostgreSQL server on 127.0.0.1


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A 12-study demo dataset, written once per test session."""
    return generate_demo(tmp_path_factory.mktemp("demo") / "rsna", studies=SMALL_STUDIES, seed=3)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh working folder: its own mlruns/ store and .harness/ home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RSNA_DATA_DIR", raising=False)
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / ".harness"))
    return tmp_path


@pytest.fixture
def store(workdir) -> Path:
    """The working folder with a real SQLite MLflow store (mlruns/mlflow.db) as the tracking URI."""
    import mlflow

    (workdir / "mlruns").mkdir()
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    yield workdir
    mlflow.set_tracking_uri(None)


def editable_copy(demo_root: Path, dst: Path) -> Path:
    """The CSVs copied (so a test can break them), the images linked (they stay read-only)."""
    dst.mkdir()
    for name in (competition.TRAIN_CSV, competition.COORDS_CSV, competition.SERIES_CSV):
        shutil.copy(demo_root / name, dst / name)
    (dst / competition.TRAIN_IMAGES).symlink_to(demo_root / competition.TRAIN_IMAGES)
    return dst


def install_plugin(site: Path, module: str, source: str, variants: list[str]) -> dict[str, str]:
    """A third-party variant package as `pip install` leaves it: `module`.py plus its .dist-info with
    the `harness.variants` entry points, in `site`; returns the environment that puts it on sys.path
    (discovery then goes through importlib.metadata unchanged)."""
    site.mkdir()
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.variants]\n" + "".join(f"{v} = {module}\n" for v in variants))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def harness_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `harness` command in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    full_env.update({"HARNESS_HOME": str(cwd / ".harness"), "COLUMNS": "200"}, **(env or {}))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def harness_ui(cwd: Path):
    """A real `harness ui` (an `mlflow server`) on the store in `cwd`: yields its port once /health
    answers, and stops it afterwards."""
    import time
    import urllib.request

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "ui", "--port", str(port)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-2000:]
                time.sleep(1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
