"""What the uint8 hand-off buys: v9's full-profile training loader (2 workers, batch 12, the
preprocessing cache) delivering float32 samples, as on CPU, against uint8 samples, as on CUDA (where
`normalize_on_device` then runs on the GPU), with and without v9's augmentation, side by side.

    python benchmarks/handoff.py                  # the demo data; writes benchmarks/handoff.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.data.dataset import SliceDataset  # noqa: E402
from harness.training.loaders import data_source
from harness.training.plan import prepare  # noqa: E402


def delivered(plan, source, augment: str, uint8: bool, batches: int) -> dict:
    d = plan.cfg.data
    ds = SliceDataset(plan.table, plan.train_rows, d, True, augment, 0, source, uint8=uint8)
    loader = DataLoader(ds, batch_size=plan.cfg.train.batch_size, shuffle=True, num_workers=d.num_workers,
                        persistent_workers=True, prefetch_factor=d.prefetch_factor, drop_last=True)
    it = iter(loader)
    first = next(it)  # workers started and their queues filling: not timed
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        n += len(batch["label"])
    seconds = time.perf_counter() - start
    return {"augment": augment, "handoff": "uint8" if uint8 else "float32", "samples_per_s": round(n / seconds, 1),
            "bytes_per_batch": first["image"].nbytes}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="dataset root (default: the built-in demo)")
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "handoff.json"))
    args = p.parse_args(argv)
    console = Console(stderr=True, quiet=True)
    plan = prepare("v9", 0, args.data_dir, "full", None, {"model.pretrained": False}, console)
    source = data_source(plan, console, Path("/dev/null"))
    rows = []
    for augment in (plan.cfg.data.augment, "none"):
        for uint8 in (False, True):
            rows.append(delivered(plan, source, augment, uint8, args.batches))
            print(rows[-1], flush=True)
    report = {"command": "python benchmarks/handoff.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu_cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
              "num_workers": plan.cfg.data.num_workers, "img_size": plan.cfg.data.img_size, "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
