"""A demo ablation with a known answer: a variant against a copy with two factors changed, one harmless and
one planted to hurt; the ablation must pin the loss on the planted factor.

    python benchmarks/ablation.py [--base v4] [--folds all] [--seeds 3] [--epochs 3] [--paths both,greedy,shapley]

The copy (`<base>kat`, installed as an out-of-tree plugin, what `pip install` leaves) differs from its base in
- the model factor, harmlessly: its builder draws a few random numbers first, so at the same seed the model
  starts from another initialisation (the same architecture with other luck);
- the pixels factor, harmfully: a fixed window of centre 4000 and width 1, far above the demo's intensities,
  so every slice is flat black and the lesion is gone.
`harness ablate <base> <base>kat --fold F --seeds S` trains the arms (smoke profile, 2 threads pinned) and its
parent run's ablation.json is read back; then the other paths run in the same store, where with two factors
they need no arm the first did not train. The right answer: pixels lowers BA, model is indistinguishable.
Recorded per path: the table, each effect with its interval and verdict, the runs trained, and the wall time.
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
"""Known-answer copies for the ablation check: the base's recipe with another initialisation and a flat window."""
import dataclasses

from harness.core.registry import get_variant, register_variant


def _twin(base):
    def build(cfg):
        import torch

        torch.rand(7)  # a different random initialisation at the same seed: the same model, other luck
        return get_variant(base).build_model(cfg)
    build.__qualname__ = f"build_{base}_twin"
    return build


def _copy(base):
    def defaults():
        cfg = get_variant(base).defaults()
        data = dataclasses.replace(cfg.data, intensity="fixed_window", window_center=4000.0, window_width=1.0)
        return dataclasses.replace(cfg, variant=f"{base}kat", data=data)
    return defaults


for _base in ("v4", "v9"):
    register_variant(f"{_base}kat", f"{_base} with another initialisation (harmless) and a flat window (planted harm)",
                     build_model=_twin(_base), outputs=get_variant(_base).outputs)(_copy(_base))
'''
COPIES = ("v4kat", "v9kat")


def install(site: Path) -> dict[str, str]:
    """The plugin as `pip install` leaves it (module + .dist-info with the entry points); the env that finds it."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "known_answer_ablation.py").write_text(PLUGIN)
    info = site / "known_answer_ablation-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: known-answer-ablation\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.variants]\n" + "".join(f"{v} = known_answer_ablation\n"
                                                                           for v in COPIES))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def harness(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")} | env
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, check=True, stdin=subprocess.DEVNULL)


def ablation_json(cwd: Path) -> dict:
    """The newest ablation parent's ablation.json in the store under cwd."""
    files = sorted((cwd / "mlruns" / "artifacts").glob("*/*/artifacts/ablation.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text())


def known_answer(cwd: Path, env: dict, base: str, folds: str, seeds: int, epochs: int, path: str = "both",
                 extra: list[str] = ()) -> dict:
    """Run the ablation; return its result, its printed output and the seconds it took."""
    start = time.perf_counter()
    done = harness(["ablate", base, f"{base}kat", "--path", path, "--fold", folds, "--seeds", str(seeds),
                    "--profile", "smoke", "--set", f"train.epochs={epochs}", "--set", "train.threads=2", *extra],
                   cwd, env)
    return {"result": ablation_json(cwd), "stdout": done.stdout, "seconds": time.perf_counter() - start}


def summary(run: dict) -> dict:
    result = run["result"]
    pts = lambda r: [round(100 * r[k], 1) if r[k] is not None else None for k in ("estimate", "low", "high")]
    rows = {}
    for r in result["rows"]:
        rows[r["factor"]] = {k: pts(r[k]) for k in ("leave_one_in", "leave_one_out", "shapley", "gain") if r.get(k)}
        rows[r["factor"]] |= {"verdict": r["verdict"], "interacts": r.get("interacts")}
    cells = sum(a["cells"] for a in result["arms"])
    return {"a": result["a"], "b": result["b"], "path": result["path"], "budget": result["budget"],
            "epoch": result["epoch"], "ba_a": round(100 * result["ba_a"], 1), "ba_b": round(100 * result["ba_b"], 1),
            "total_points": pts(result["total"]), "factors": rows, "arms": len(result["arms"]), "runs": cells,
            "seconds": round(run["seconds"], 1), "runs_per_hour": round(3600 * cells / run["seconds"], 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="v4", choices=("v4", "v9"))
    p.add_argument("--folds", default="all")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)  # v4 learns the demo in 3 smoke epochs; v9 needs 8
    p.add_argument("--paths", default="both,greedy,shapley")
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    p.add_argument("--keep", help="work in this folder and keep it")
    a = p.parse_args(argv)
    out = {"command": "python benchmarks/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "epochs": a.epochs, "paths": {}}
    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as scratch:
        tmp = Path(a.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        env = install(tmp / "site") | {"HARNESS_HOME": str(tmp / "home")}
        for path in a.paths.split(","):
            run = known_answer(tmp, env, a.base, a.folds, a.seeds, a.epochs, path)
            md = sorted((tmp / "mlruns" / "artifacts").glob("*/*/artifacts/ablation.md"),
                        key=lambda f: f.stat().st_mtime)
            out["paths"][path] = summary(run) | {"table": md[-1].read_text()}
            Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
