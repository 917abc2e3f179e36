"""The benchmark scripts still run (their figures are recorded in benchmarks/*.md, never asserted)."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_runs_with_the_smoke_profile_on_cpu(demo_root, workdir):
    out = workdir / "gpu.json"
    assert _load("gpu").main(["--profile", "smoke", "--variants", "v9", "--modes", "fp32", "amp_cl", "--steps", "2",
                              "--warmup", "1", "--data-dir", str(demo_root), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(r["variant"], r["mode"]) for r in report["rows"]] == [("v9", "fp32"), ("v9", "amp_cl")]
    for row in report["rows"]:
        assert row["samples_per_s"] > 0 and 0 <= row["loader_wait_share"] < 1
        assert row["device"] == "cpu" and row["amp_dtype"] is None and row["channels_last"] is False


@pytest.mark.slow
def test_threads_benchmark_runs_on_the_small_demo(demo_root, workdir):
    out = workdir / "threads.json"
    assert _load("threads").main(["--rounds", "1", "--epochs", "1", "--cases", "idle", "--arms", "one", "chosen",
                                  "--overhead-repeats", "1", "--data-dir", str(demo_root), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(s["case"], s["arm"]) for s in report["summary"]] == [("idle", "one"), ("idle", "chosen")]
    assert [r["threads"] for r in report["runs"] if r["arm"] == "one"] == [1]
    assert all(len(r["epoch_s"]) == 1 and r["line"].startswith("threads: ") for r in report["runs"])
    assert report["overhead"]["trainer_over_bare"] > 0 and report["overhead"]["steps"] > 0
