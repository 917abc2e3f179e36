"""The run's data loaders: where a sample's pixels come from (the preprocessing cache, or prepared
on the fly), the seeded training order with the variant's sampler, and this rank's share of it."""
from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader, RandomSampler

from harness.core import collectives, threads
from harness.core.errors import UsageError
from harness.data import cache
from harness.data.dataset import DirectSource, SliceDataset, Source
from harness.data.samplers import progressive_oversample, weighted_sampler
from harness.training.plan import RunPlan, harness_home


def data_source(plan: RunPlan, console: Console, log: Path) -> Source:
    """The preprocessing cache (built with a progress bar on first use), or on-the-fly preparation
    when data.cache is off; unreadable files then go to `log`."""
    d = plan.cfg.data
    if not d.cache:
        return DirectSource(plan.table, d, log)
    root = Path(d.cache_dir).expanduser() if d.cache_dir else harness_home() / "cache"
    # no refresh thread: the build forks its workers, and a fork should not copy a running thread
    with Progress(console=console, transient=True, auto_refresh=False) as bar:
        task = bar.add_task("preprocessing", total=len(plan.table.samples))
        try:
            return cache.open_or_build(plan.table, d, plan.data_fp, root, notice=console.print,
                                       progress=lambda done, total: bar.update(task, completed=done, refresh=True))
        except OSError as exc:  # a read-only or full disk: say where, and how to avoid it
            raise UsageError(f"preprocessing cache {root}: {exc.strerror or exc} (set data.cache_dir to a "
                            "writable folder, or data.cache=false)") from None


def unreadable_files(source: Source, log: Path) -> dict[str, str]:
    """path -> reason of every unreadable file the run met (blank slices in its samples)."""
    if isinstance(source, cache.PreprocessCache):
        return dict(source.unreadable)
    lines = log.read_text().splitlines() if log.is_file() else []
    return dict(line.split("\t", 1) for line in lines if "\t" in line)


def loaders(plan: RunPlan, device: torch.device, source: Source):
    """Train loader (sampler as the variant; seeded; this rank's share of each batch under
    --devices) and validation loader, plus their options. Workers live for the whole run and keep
    data.prefetch_factor batches ready; pinned memory lets the copies to the GPU overlap compute."""
    cfg, d = plan.cfg, plan.cfg.data
    world = collectives.world_size()
    # one OpenCV thread per worker, each being one of the cores the run counted on (threads.apply
    # gives forked workers theirs; the init function gives spawned ones theirs)
    workers = dict(persistent_workers=True, prefetch_factor=d.prefetch_factor,
                   worker_init_fn=threads.single_threaded_worker) if d.num_workers else {}
    common = dict(batch_size=cfg.train.batch_size // world, num_workers=d.num_workers,
                  pin_memory=device.type == "cuda", **workers)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    rows, copies = plan.train_rows, None
    if d.sampler == "progressive":  # the notebooks seeded it with 42 + fold
        rows, copies = progressive_oversample(plan.table.samples, rows, cfg.train.seed + cfg.fold)
    uint8 = device.type == "cuda"  # normalised on the GPU: 4-12x fewer bytes through the loader and PCIe
    train_ds = SliceDataset(plan.table, rows, d, True, d.augment, cfg.train.seed, source, copies, uint8)
    if d.sampler == "weighted":
        order = dict(sampler=weighted_sampler(train_ds.labels, gen))
    else:  # as shuffle=True: the loader's worker seed and the order both drawn from `gen`
        order = dict(sampler=RandomSampler(train_ds, generator=gen), generator=gen)
    if world > 1:
        order["sampler"] = collectives.ShardSampler(order["sampler"], collectives.rank(), world)
    train = DataLoader(train_ds, drop_last=cfg.train.drop_last, **order, **common)
    val_ds = SliceDataset(plan.table, plan.val_rows, d, False, "none", cfg.train.seed, source, uint8=uint8)
    val = DataLoader(val_ds, shuffle=False, **common)
    return train, val, common


