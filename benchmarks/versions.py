"""Version-level verdicts on the demo, with known answers: v9 against an A/A twin and a planted harm.

    python benchmarks/versions.py [--folds all] [--seeds 3] [--epochs 8] [--out benchmarks/versions.json] [--keep DIR]

Two variants are installed as an out-of-tree plugin (PLUGIN below, what `pip install` leaves):
- `v9twin`: v9's recipe under another name; its model draws a few random numbers before it is built,
  so at the same seed it starts from another initialisation: the same recipe with other luck (an A/A pair
  whose cells are not copies of v9's);
- `v9flat`: v9 with a fixed window of centre 4000 and width 1, far above the demo's intensities, so every
  slice is flat black and the lesion is gone: a planted harm.
Each trains a matrix (`harness run V --fold F --seeds S`, smoke profile, 2 threads pinned), then
`harness compare v9 v9twin v9flat --fold F --json` gives the verdicts. Recorded: each verdict, the
difference with its interval, the variance budget (seed SD, fold SD, sample SE), the MDD, the wall time
and the cells per hour on this machine. The right answers: v9twin indistinguishable, v9flat lower.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = '''
"""Known-answer variants for the version-level checks: v9 under another name, and v9 with a flat window."""
import dataclasses

from harness.core.registry import get_variant, register_variant


def build_twin(cfg):
    import torch

    from variants.v9 import build_model

    torch.rand(7)  # a different random initialisation at the same seed: the same recipe, other luck
    return build_model(cfg)


@register_variant("v9twin", "v9 under another name (A/A check)", build_model=build_twin)
def v9twin():
    return dataclasses.replace(get_variant("v9").defaults(), variant="v9twin")


@register_variant("v9flat", "v9 with a window that flattens every slice (planted harm)",
                  build_model="variants.v9:build_model")
def v9flat():
    cfg = get_variant("v9").defaults()
    return dataclasses.replace(cfg, variant="v9flat",
                               data=dataclasses.replace(cfg.data, window_center=4000.0, window_width=1.0))
'''
VARIANTS = ("v9", "v9twin", "v9flat")


def install(site: Path) -> dict[str, str]:
    """The plugin as `pip install` leaves it (module + .dist-info with the entry points); the env that finds it."""
    site.mkdir(parents=True)
    (site / "known_answer_variants.py").write_text(PLUGIN)
    info = site / "known_answer_variants-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: known-answer-variants\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[harness.variants]\n" + "".join(f"{v} = known_answer_variants\n" for v in VARIANTS[1:]))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def harness(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")} | env
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, check=True, stdin=subprocess.DEVNULL)


def known_answers(cwd: Path, env: dict, folds: str, seeds: int, epochs: int, extra: list[str] = ()) -> dict:
    """Train the three matrices, compare them; return the report and the seconds each matrix took."""
    common = ["--fold", folds, "--seeds", str(seeds), "--profile", "smoke", "--set", f"train.epochs={epochs}",
              "--set", "train.threads=2", *extra]
    seconds = {}
    for variant in VARIANTS:
        start = time.perf_counter()
        harness(["run", variant, *common], cwd, env)
        seconds[variant] = time.perf_counter() - start
    report = json.loads(harness(["compare", *VARIANTS, "--fold", folds, "--json"], cwd, env).stdout)
    return {"report": report, "seconds": seconds}


def summary(result: dict) -> dict:
    report, seconds = result["report"], result["seconds"]
    level = report["version_level"]
    cells = level["budget"]["v9"]["n_cells"]
    pts = lambda x: None if x is None else round(100 * x, 2)
    return {
        "folds": report["folds"], "cells_per_variant": cells, "epoch": level["epoch"], "method": level["method"],
        "verdicts": {r["variant"]: r["verdict"] for r in level["rows"]},
        "model_level": {r["variant"]: r["verdict"] for r in report["against_baseline"]},
        "difference_points": {r["variant"]: [pts(r["difference"]), pts(r["low"]), pts(r["high"])]
                              for r in level["rows"]},
        "p_holm": {r["variant"]: r["p_holm"] for r in level["rows"]},
        "mdd_points": {r["variant"]: pts(r["mdd"]) for r in level["rows"]},
        "budget_points": {v: {k: pts(b[k]) for k in ("mean", "seed_sd", "fold_sd", "sample_se")}
                          for v, b in level["budget"].items()},
        "seconds": {v: round(s, 1) for v, s in seconds.items()},
        "cells_per_hour": round(3600 * cells * len(VARIANTS) / sum(seconds.values()), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folds", default="all")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8)  # the smoke profile's: fewer and v9 learns nothing on the demo
    p.add_argument("--data-dir", help="dataset (default: the built-in demo)")
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    p.add_argument("--keep", help="work in this folder and keep it (its MLflow store can be compared again)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-versions-") as scratch:
        tmp = Path(a.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        env = install(tmp / "site") | {"HARNESS_HOME": str(tmp / "home")}
        extra = ["--data-dir", a.data_dir] if a.data_dir else []
        start = time.perf_counter()
        out = summary(known_answers(tmp, env, a.folds, a.seeds, a.epochs, extra))
    out |= {"command": "python benchmarks/versions.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "epochs": a.epochs, "seeds": a.seeds, "total_seconds": round(time.perf_counter() - start, 1)}
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
