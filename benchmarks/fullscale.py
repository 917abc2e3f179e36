"""Full-scale benchmark (issue item 3): the data pipelines of v4 and v9 on a demo dataset the size of
the real one (1,975 studies), everything side by side in one run.

1. demo generation: wall time and size on disk;
2. per pipeline (v4, v9, v9 with data.cache_resolution=output; full profile, variant defaults):
   cache build wall time, size on disk, samples; loader throughput from the cache through a torch
   DataLoader with the variant's workers and batch size (no model); peak memory of the build and of
   the loading, each in a fresh process (main process and largest worker);
3. the same caches on *real-size* subsets (100 studies, their Sagittal T2/STIR rewritten at 384, 512
   and 640 px, as real sagittal T2 is mostly 384-640 px while the demo draws ~200 px): bytes per
   sample and build time, extrapolated to the real dataset's sample count;
4. what cache_resolution=output does to the pixels (each real size, and the demo): v9's 256-px uint8
   crops against native, with and without jitter, next to native against itself moved one pixel;
5. peak build memory at the full size against a 120-study subset of the same data (flat?).

    python benchmarks/fullscale.py                                # ~13 min on 2 cores, ~9 GB of /tmp
    python benchmarks/fullscale.py --studies 40 --out /tmp/fs.json   # a quick check

Data and caches go to a temporary folder, removed at the end (each cache as soon as it is measured).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL_SAMPLES = 8664 + 736 + 470  # labelled spinal levels of the real train.csv (docs/data.md)
PIPELINES = {"v4": ("v4", "native"), "v9": ("v9", "native"), "v9_output": ("v9", "output")}


def data_config(variant: str, resolution: str, root: Path, **sets):
    """The variant's full-profile config with cache_resolution set (and any further overrides)."""
    from harness.core.registry import get_variant
    from harness.core.run_config import build_config

    sets = {"data.cache_resolution": resolution, **{f"data.{k}": v for k, v in sets.items()}}
    return build_config(get_variant(variant), 0, "full", None, sets, str(root))


def disk_bytes(folder: Path) -> tuple[int, int]:
    """(bytes in files, files) under folder, following no links."""
    total = count = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            total += os.lstat(os.path.join(dirpath, f)).st_size
            count += 1
    return total, count


def peak_rss() -> dict:
    """Peak RSS of this process and of its largest finished child (MB). The main figure is VmHWM:
    getrusage(RUSAGE_SELF) would carry the parent's peak across the exec that started this process."""
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return {"peak_rss_mb_main": round(int(hwm.split()[1]) / 1024, 1),  # kB
            "peak_rss_mb_worker": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


# ---- steps, each run in a fresh interpreter so that its peak memory is its own -------------------


def step_build(root: str, cache_dir: str, variant: str, resolution: str) -> dict:
    from harness.data import cache
    from harness.data.rsna import data_fingerprint, load_samples

    cfg = data_config(variant, resolution, Path(root)).data
    table = load_samples(root)
    start = time.perf_counter()
    built = cache.open_or_build(table, cfg, data_fingerprint(root), Path(cache_dir))
    seconds = time.perf_counter() - start
    size, _ = disk_bytes(built.folder)
    return {"samples": len(table.samples), "build_seconds": round(seconds, 2), "workers": built.manifest["workers"],
            "cache_bytes": size, "region_bytes": built.manifest["bytes"], **peak_rss()}


def step_load(root: str, cache_dir: str, variant: str, resolution: str, samples: int) -> dict:
    """Samples/s of the variant's training loader from the cache (augmentation on), then without
    augmentation; all samples form the training set (the rate does not depend on which rows)."""
    import torch
    from torch.utils.data import DataLoader

    from harness.data import cache
    from harness.data.dataset import SliceDataset
    from harness.data.rsna import data_fingerprint, load_samples
    from harness.data.samplers import progressive_oversample

    cfg = data_config(variant, resolution, Path(root))
    d, t = cfg.data, cfg.train
    table = load_samples(root)
    source = cache.open_or_build(table, d, data_fingerprint(root), Path(cache_dir))
    rows, copies = np.arange(len(table.samples)), None
    if d.sampler == "progressive":
        rows, copies = progressive_oversample(table.samples, rows, t.seed)
    out = {"batch_size": t.batch_size, "num_workers": d.num_workers}
    # the same samples in this process, one at a time (no batching, no transfer between processes)
    ds = SliceDataset(table, rows, d, True, "none", t.seed, source)
    order = np.random.default_rng(0).permutation(len(ds))[:samples // 2]
    start = time.perf_counter()
    for i in order:
        ds[int(i)]
    out["in_process_no_augmentation_per_s"] = round(len(order) / (time.perf_counter() - start), 1)
    for name, recipe in (("augmented", d.augment), ("no_augmentation", "none")):
        ds = SliceDataset(table, rows, d, True, recipe, t.seed, source, copies if recipe != "none" else None)
        extra = {"prefetch_factor": getattr(d, "prefetch_factor", 2)} if d.num_workers else {}
        loader = DataLoader(ds, batch_size=t.batch_size, shuffle=True, num_workers=d.num_workers,
                            generator=torch.Generator().manual_seed(0), **extra)
        start, seen, first = time.perf_counter(), 0, None
        for batch in loader:
            seen += len(batch["image"])
            if first is None:  # worker start-up and the first batch, reported apart
                first, first_seen = time.perf_counter(), seen
            if seen >= samples:
                break
        end = time.perf_counter()
        del loader  # workers exit (and are reaped: their peak enters RUSAGE_CHILDREN)
        rate = (seen - first_seen) / (end - first) if seen > first_seen else None
        out[name] = {"samples": seen, "first_batch_seconds": round(first - start, 2),
                     "samples_per_s": rate and round(rate, 1)}
    return {**out, **peak_rss()}


def run_step(*args) -> dict:
    """A step in a fresh interpreter; polled from here for its peak anonymous memory (RSS less
    file-backed pages: what stays when the memory-mapped cache's pages are not counted), main process
    and largest child. Polling from outside keeps threads out of the processes that fork workers."""
    import psutil

    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # files: a full pipe would block it
    proc = subprocess.Popen([sys.executable, __file__, "--step", json.dumps(args)], stdout=out, stderr=err, text=True)
    peaks = {"main": 0, "worker": 0}
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for who, p in [("main", watched)] + [("worker", c) for c in watched.children(recursive=True)]:
                m = p.memory_info()
                peaks[who] = max(peaks[who], m.rss - m.shared)
        except psutil.Error:  # a process that ended between listing and reading
            pass
        time.sleep(0.2)
    out.seek(0), err.seek(0)
    if proc.returncode:
        raise SystemExit(f"step {args[0]} failed:\n{err.read()[-3000:]}")
    figures = json.loads(out.read().strip().splitlines()[-1])
    figures["load_avg_1min"] = round(os.getloadavg()[0], 2)  # above ~2 (this step's own), others were running
    return {**figures, **{f"peak_anon_mb_{k}": round(v / 2**20, 1) for k, v in peaks.items()}}


# ---- the pieces run in the main process ----------------------------------------------------------


def subset(root: Path, dst: Path, studies: int) -> Path:
    """The first `studies` studies of a dataset: CSVs filtered, study folders linked."""
    import pandas as pd

    from harness.core import competition

    train = pd.read_csv(root / competition.TRAIN_CSV).head(studies)
    keep = set(train["study_id"])
    (dst / competition.TRAIN_IMAGES).mkdir(parents=True)
    train.to_csv(dst / competition.TRAIN_CSV, index=False)
    for name in (competition.COORDS_CSV, competition.SERIES_CSV):
        frame = pd.read_csv(root / name)
        frame[frame["study_id"].isin(keep)].to_csv(dst / name, index=False)
    for s in keep:
        (dst / competition.TRAIN_IMAGES / str(s)).symlink_to(root / competition.TRAIN_IMAGES / str(s))
    return dst


def pixel_effect(root: Path, n: int, seed: int = 0) -> dict:
    """v9's 256-px uint8 crops, cache_resolution=output against native, over n random samples (slices
    with a file only): with no jitter, with the training jitter drawn as the dataset draws it, and, for
    scale, native against native moved one source pixel to the right."""
    from harness.data.dataset import crops
    from harness.data.preprocess import prepare_sample
    from harness.data.rsna import load_samples

    table = load_samples(root)
    native, output = (data_config("v9", r, root, augment="none").data for r in ("native", "output"))
    rng = np.random.default_rng(seed)
    j = native.crop_jitter
    diffs = {"no_jitter": [], "jitter": [], "native_moved_1px": []}
    for i in rng.choice(len(table.samples), min(n, len(table.samples)), replace=False):
        pn, po = prepare_sample(table, int(i), native), prepare_sample(table, int(i), output)
        ok = pn.status == 0
        cx, cy = (int(v) for v in table.samples.iloc[int(i)][["x", "y"]])
        jx, jy = (int(rng.integers(-j, j + 1)) for _ in range(2))
        diff = lambda a, b, ok=ok: np.abs(a[ok].astype(np.int16) - b[ok]).ravel()
        diffs["no_jitter"].append(diff(crops(pn, native, cx, cy), crops(po, output, cx, cy)))
        diffs["jitter"].append(diff(crops(pn, native, cx + jx, cy + jy), crops(po, output, cx + jx, cy + jy)))
        diffs["native_moved_1px"].append(diff(crops(pn, native, cx, cy), crops(pn, native, cx + 1, cy)))
    out = {"samples": min(n, len(table.samples))}
    for name, parts in diffs.items():
        d = np.concatenate(parts)
        out[name] = {"mean_abs": round(float(d.mean()), 2), "p99_abs": int(np.percentile(d, 99)),
                     "max_abs": int(d.max()), "share_over_16": round(float((d > 16).mean()), 4)}
    return out


def pipelines(root: Path, work: Path, load_samples_n: int, label: str) -> dict:
    """Build, measure and load each pipeline's cache on `root`; each cache is removed once measured."""
    results = {}
    for name, (variant, resolution) in PIPELINES.items():
        cache_dir = work / f"cache-{label}-{name}"
        print(f"[{label}] {name}: building", file=sys.stderr, flush=True)
        r = {"build": run_step("build", str(root), str(cache_dir), variant, resolution)}
        print(f"[{label}] {name}: {r['build']['build_seconds']} s, {r['build']['cache_bytes'] / 2**30:.2f} GiB; "
              "loading", file=sys.stderr, flush=True)
        r["load"] = run_step("load", str(root), str(cache_dir), variant, resolution, load_samples_n)
        r["bytes_per_sample"] = round(r["build"]["cache_bytes"] / r["build"]["samples"])
        results[name] = r
        shutil.rmtree(cache_dir)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=1975, help="demo studies (the real dataset has 1,975)")
    ap.add_argument("--real-size-studies", type=int, default=100, help="studies rewritten at real image sizes")
    ap.add_argument("--real-size-sides", type=int, nargs="+", default=[384, 512, 640],
                    help="Sagittal T2/STIR sides (px) of the rewrites (real: mostly 384-640)")
    ap.add_argument("--flat-studies", type=int, default=120, help="subset whose build memory is compared")
    ap.add_argument("--load-samples", type=int, default=1200, help="samples timed through each loader")
    ap.add_argument("--pixel-samples", type=int, default=300, help="samples compared native vs output")
    ap.add_argument("--work", default=None, help="scratch folder (default: a new one under the temp dir)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("fullscale.json")))
    ap.add_argument("--step", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        step, *rest = json.loads(args.step)
        print(json.dumps({"build": step_build, "load": step_load}[step](*rest)))
        return
    counts = (args.studies, args.real_size_studies, args.flat_studies, args.load_samples, args.pixel_samples)
    if min(counts + tuple(args.real_size_sides)) < 1:
        ap.error("every count and side must be at least 1")

    import torch

    from harness.data.demo import generate_demo

    sys.path.insert(0, str(Path(__file__).parent))
    from loader import real_size_copy  # benchmarks/loader.py's rewrite of the Sagittal T2/STIR series

    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "python": platform.python_version(), "torch": torch.__version__, "studies": args.studies,
               "real_size": {}}
    work = Path(tempfile.mkdtemp(prefix="harness-fullscale-", dir=args.work))
    try:
        print(f"generating {args.studies} demo studies in {work}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        root = generate_demo(work / "demo", studies=args.studies, seed=0)
        seconds = time.perf_counter() - start
        size, files = disk_bytes(root)
        results["generate"] = {"seconds": round(seconds, 1), "workers": os.cpu_count(), "bytes": size, "files": files,
                               "load_avg_1min": round(os.getloadavg()[0], 2)}
        results["demo"] = pipelines(root, work, args.load_samples, "demo")

        small = subset(root, work / "flat", min(args.flat_studies, args.studies))
        flat = run_step("build", str(small), str(work / "cache-flat"), "v9", "native")
        full = results["demo"]["v9"]["build"]
        results["memory_flat"] = {"subset": flat, "samples_ratio": round(full["samples"] / flat["samples"], 2),
                                  **{f"{k}_ratio": round(full[k] / flat[k], 3) for k in
                                     ("peak_rss_mb_main", "peak_rss_mb_worker", "peak_anon_mb_main",
                                      "peak_anon_mb_worker")}}
        shutil.rmtree(work / "cache-flat")

        part = subset(root, work / "part", min(args.real_size_studies, args.studies))
        for side in args.real_size_sides:
            print(f"real-size copy at {side} px", file=sys.stderr, flush=True)
            real = real_size_copy(part, work / f"real{side}", side)
            r = results["real_size"][side] = pipelines(real, work, min(args.load_samples, 600), f"{side}px")
            for name in PIPELINES:
                r[name]["extrapolated_real_dataset"] = {
                    "samples": REAL_SAMPLES, "cache_gib": round(r[name]["bytes_per_sample"] * REAL_SAMPLES / 2**30, 2),
                    "build_seconds": round(r[name]["build"]["build_seconds"] / r[name]["build"]["samples"]
                                           * REAL_SAMPLES)}
            print("pixel effect of cache_resolution=output", file=sys.stderr, flush=True)
            r["pixels"] = pixel_effect(real, args.pixel_samples)
            shutil.rmtree(real)
        results["pixels_demo"] = pixel_effect(root, args.pixel_samples)
        demo = results["demo"]
        ratio = lambda r, key: round(r["v9_output"]["build"][key] / r["v9"]["build"][key], 3)
        results["ratios"] = {"demo": {"v9_output_vs_native_cache_bytes": ratio(demo, "cache_bytes"),
                                      "v9_output_vs_native_build_seconds": ratio(demo, "build_seconds")}}
        for side, r in results["real_size"].items():
            results["ratios"][f"{side}px"] = {
                "v9_output_vs_native_cache_bytes": ratio(r, "cache_bytes"),
                "v9_output_vs_native_build_seconds": ratio(r, "build_seconds"),
                "v9_bytes_per_sample_vs_demo": round(r["v9"]["bytes_per_sample"] / demo["v9"]["bytes_per_sample"], 2)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
