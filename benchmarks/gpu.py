"""Training throughput on the GPU path: v9 and v4 with random-weight backbones, through the harness's
own loaders (preprocessing cache, loader workers, pinned memory) and Trainer.run_step, in three
precision modes side by side in one process:

  fp32     train.amp=false, train.channels_last=false
  amp      train.amp=true (bf16 where the GPU has it natively, else fp16 + GradScaler)
  amp_cl   train.amp=true, train.channels_last=true (the harness's default on CUDA)

Per mode: training samples/s, the share of wall time the loop spent waiting for the next batch
(the loader is the bottleneck when this is high; the target is < 5%) and peak GPU memory.

    python benchmarks/gpu.py                      # full profile on CUDA (smoke on CPU), the demo data
    python benchmarks/gpu.py --profile smoke --steps 4 --warmup 1 --out /tmp/gpu.json   # what CI runs

On CPU the AMP and channels_last switches are inert, so the three modes measure the same thing;
CI runs it there only to keep the script working.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.losses import build_loss  # noqa: E402
from harness.training.loaders import data_source, loaders
from harness.training.plan import prepare, training_class_weights  # noqa: E402
from harness.training.trainer import Trainer  # noqa: E402

MODES = {"fp32": {"train.amp": False, "train.channels_last": False},
         "amp": {"train.amp": True, "train.channels_last": False},
         "amp_cl": {"train.amp": True, "train.channels_last": True}}


def batches(trainer: Trainer):
    """Training batches without end, epoch after epoch (fresh augmentation draws each), as the
    trainer's loop would take them."""
    epoch = 0
    while True:
        trainer.train_loader.dataset.set_epoch(epoch)
        yield from trainer.train_loader
        epoch += 1


def measure(variant: str, mode: str, args, console: Console) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sets = MODES[mode] | {"model.pretrained": False, "train.device": device, "train.mixup_prob": 0.0}
    plan = prepare(variant, 0, args.data_dir, args.profile, None, sets, console)
    cfg = plan.cfg
    source = data_source(plan, console, Path("/dev/null"))
    train_loader, val_loader, _ = loaders(plan, torch.device(device), source)
    model = plan.variant.build_model(cfg)
    trainer = Trainer(cfg, model, build_loss(cfg.loss, training_class_weights(plan)), plan.variant.predict,
                      train_loader, val_loader, [])
    trainer.model.train()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    it = batches(trainer)
    for _ in range(args.warmup):  # cuDNN autotuning, loader workers starting, allocator warm
        trainer.run_step(trainer.to_device(next(it)))
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    waited, samples = 0.0, 0
    start = time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        batch = next(it)
        waited += time.perf_counter() - t0
        trainer.run_step(trainer.to_device(batch))  # no host sync inside: the GPU runs ahead
        samples += len(batch["label"])
    sync()
    wall = time.perf_counter() - start
    return {"variant": variant, "mode": mode, "profile": cfg.profile, "device": device,
            "amp_dtype": str(trainer.amp_dtype).removeprefix("torch.") if trainer.amp_dtype else None,
            "channels_last": device == "cuda" and cfg.train.channels_last,
            "batch_size": cfg.train.batch_size, "img_size": cfg.data.img_size, "num_workers": cfg.data.num_workers,
            "steps": args.steps, "samples_per_s": round(samples / wall, 2),
            "loader_wait_share": round(waited / wall, 4),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["v9", "v4"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--profile", default="full" if torch.cuda.is_available() else "smoke", choices=["full", "smoke"])
    p.add_argument("--data-dir", help="dataset root (default: the built-in demo, generated on first use)")
    p.add_argument("--steps", type=int, default=60, help="timed training steps per mode")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu.json"))
    args = p.parse_args(argv)
    console = Console(stderr=True, quiet=True)
    rows = []
    for variant in args.variants:
        for mode in args.modes:
            row = measure(variant, mode, args, console)
            rows.append(row)
            print(f"{variant} {mode:7s} {row['samples_per_s']:9.1f} samples/s  loader wait "
                  f"{100 * row['loader_wait_share']:5.1f}%  peak GPU {row['peak_gpu_mb']} MB", flush=True)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    report = {"command": "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "gpu": gpu, "cpu_cores": os.cpu_count(), "python": platform.python_version(),
              "torch": torch.__version__,
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
