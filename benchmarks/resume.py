"""What resumability costs: the per-epoch resume checkpoint of v4 and v9 at their full profile (size,
write and read time; random weights, state after one real optimiser step), and the main job
(`harness run v9 --fold 0` on the demo) with and without the per-epoch checkpoints, in one run.

    python benchmarks/resume.py            # writes benchmarks/resume.json; figures go in resume.md
"""
from __future__ import annotations

import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.core.registry import get_variant  # noqa: E402
from harness.core.run_config import build_config
from harness.losses import build_loss  # noqa: E402
from harness.training import resume  # noqa: E402
from harness.training.execute import execute
from harness.training.hooks import save_atomic  # noqa: E402
from harness.training.plan import prepare  # noqa: E402
from harness.training.trainer import Trainer  # noqa: E402

REPEATS = 3


def checkpoint_cost(variant: str, folder: Path) -> dict:
    """The resume state of a full-profile model after one optimiser step: bytes, write and read s."""
    cfg = build_config(get_variant(variant), 0, "full", None, {"model.pretrained": False, "train.device": "cpu",
                                                                "train.batch_size": 2}, None)
    model = get_variant(variant).build_model(cfg)
    d = cfg.data
    channels = 3 if d.channels == "grey3" else 1
    batch = {"image": torch.randn(2, d.num_slices, channels, d.img_size, d.img_size) if d.channels == "grey3"
             else torch.randn(2, d.num_slices, d.img_size, d.img_size),
             "level": torch.tensor([0, 3]), "label": torch.tensor([0, 2])}
    loader = DataLoader(TensorDataset(torch.zeros(4)), batch_size=2, shuffle=True, generator=torch.Generator())
    t = Trainer(cfg, model, build_loss(cfg.loss, cfg.loss.class_weights), get_variant(variant).predict,
                loader, loader, [])
    t.run_step(batch)  # the optimiser's moments exist now, as after any real epoch
    path = folder / f"{variant}.pt"
    writes, reads = [], []
    for _ in range(REPEATS):
        start = time.perf_counter()
        save_atomic({"format": resume.FORMAT, "identity": {}, "trainer": t.state_dict(), "hooks": {}}, path)
        writes.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.load(path, weights_only=True)
        reads.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    return {"variant": variant, "parameters": params, "bytes": path.stat().st_size,
            "write_s": statistics.median(writes), "read_s": statistics.median(reads)}


def main_job_ratio(folder: Path) -> dict:
    """`harness run v9 --fold 0` on the demo, with and without per-epoch checkpoints, alternated."""
    os.chdir(folder)
    os.environ["HARNESS_HOME"] = str(folder / ".harness")
    quiet = Console(file=io.StringIO())
    plan = prepare("v9", 0, None, None, None, {}, quiet)
    execute(plan, quiet, resumable=False)  # warm-up: demo generation, cache build, imports
    times = {True: [], False: []}
    for _ in range(2):
        for resumable in (True, False):
            start = time.perf_counter()
            execute(plan, quiet, resumable=resumable)
            times[resumable].append(time.perf_counter() - start)
    with_ckpt, without = statistics.median(times[True]), statistics.median(times[False])
    return {"epochs": plan.cfg.train.epochs, "with_checkpoints_s": with_ckpt, "without_s": without,
            "ratio": with_ckpt / without}


def main():
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        costs = [checkpoint_cost(v, folder) for v in ("v4", "v9")]
        job = main_job_ratio(folder)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    out = {"machine": machine,
           "checkpoints": costs, "main_job": job}
    (ROOT / "benchmarks" / "resume.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
