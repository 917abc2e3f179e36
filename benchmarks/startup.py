"""How long a user waits for a usage error, beside the time to `import torch`: each command run in a
fresh interpreter, the arms interleaved, the median of several rounds.

    python benchmarks/startup.py [--rounds 5] [--out benchmarks/startup.json] [--tree OLD_CHECKOUT]

`--tree` times the commands of another checkout (e.g. `git worktree add /tmp/old <commit>`) in the
same interleaved rounds, for a before/after in one run.

A usage error is checked before torch, MLflow and albumentations are imported (harness.cli), so it
should cost a fraction of `import torch`; `harness variants` imports torch and timm to count
parameters (on the meta device: no weights are made) and so costs more than the import alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = ("name: typo\nvariant: v9\nobjective: {metric: best/balanced_acuracy, direction: maximize}\n"
        "space:\n  train.lr_head: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}\n")


TIMEOUT_S = 60  # a figure at this value means "no error within a minute: it went on to train"


def arms(spec: Path) -> dict[str, list[str]]:
    harness = [sys.executable, "-m", "harness"]
    return {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "harness run v99 (unknown variant)": harness + ["run", "v99"],
        "harness run v9 --set train.epoch=3 (unknown key)": harness + ["run", "v9", "--set", "train.epoch=3"],
        "harness run v9 --set model.weights_file=/nope": harness + ["run", "v9", "--set", "model.weights_file=/nope"],
        "harness tune typo.yaml (misspelt objective)": harness + ["tune", str(spec)],
        "harness compare v4 v4": harness + ["compare", "v4", "v4"],
        "harness config v9": harness + ["config", "v9"],
        "harness variants": harness + ["variants"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    ap.add_argument("--tree", help="another checkout whose commands are timed beside these")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        spec = Path(tmp) / "typo.yaml"
        spec.write_text(SPEC)
        commands = {name: (cmd, None) for name, cmd in arms(spec).items()}
        if args.tree:  # the other checkout's package first on the path (before the editable install)
            env = dict(os.environ, PYTHONPATH=str(Path(args.tree).resolve()))
            commands |= {f"[{Path(args.tree).name}] {name}": (cmd, env) for name, cmd in arms(spec).items()
                         if name.startswith("harness")}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):  # interleaved: a busy moment hits every arm alike
            for name, (cmd, env) in commands.items():
                start = time.perf_counter()
                try:  # a checkout that does not refuse the input starts the work itself: cut it short
                    subprocess.run(cmd, cwd=tmp, capture_output=True, stdin=subprocess.DEVNULL, env=env,
                                   timeout=TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
                times[name].append(time.perf_counter() - start)
    torch_s = statistics.median(times["python -c 'import torch'"])
    rows = [{"command": name, "median_s": round(statistics.median(t), 3),
             "ratio_to_import_torch": round(statistics.median(t) / torch_s, 2)} for name, t in times.items()]
    for row in rows:
        late = "  (still running: cut at the timeout)" if row["median_s"] >= TIMEOUT_S else ""
        print(f"{row['command']:<60} {row['median_s']:>7.3f} s  {row['ratio_to_import_torch']:>5.2f}x import torch"
              + late)
    Path(args.out).write_text(json.dumps({"rounds": args.rounds, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
