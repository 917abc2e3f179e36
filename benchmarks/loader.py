"""Loader benchmark (issue 3), everything side by side in one run.

1. samples/s decoding every DICOM each epoch vs reading the preprocessing cache (target: the cache
   at least 50x faster), for v9's full (256 px) and smoke (64 px) settings: the whole sample
   (`SliceDataset[i]`, crop/resize/normalise included) and its deterministic part alone (source[i]);
2. cache build rate vs a bare pydicom read (dcmread + pixel_array) of the same files;
3. peak memory while building the caches of two dataset sizes, each build in a fresh process
   (target: flat).

    python benchmarks/loader.py [--studies 40 120] [--out benchmarks/loader.json]

Demo datasets are generated into a temporary folder; nothing else is touched.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom


def v9_data(profile: str = "full"):
    """v9's data settings (full: window 50/350, CLAHE, crop 256 + jitter 16, 256 px; smoke: 64 px),
    without augmentation: the comparison is about where the deterministic part comes from."""
    from harness.core.registry import get_variant
    from harness.core.run_config import build_config

    return build_config(get_variant("v9"), 0, profile, None, {"data.augment": "none"}, None).data


def samples_per_s(dataset, indices) -> float:
    start = time.perf_counter()
    for i in indices:
        dataset[i]
    return len(indices) / (time.perf_counter() - start)


def bare_read_seconds(table, cfg) -> tuple[float, int]:
    """dcmread + pixel_array of every file the samples use, once each (the floor for a build)."""
    from harness.data.preprocess import slice_paths

    paths = {p for row in table.samples.itertuples() for p in slice_paths(table, row, cfg) if p is not None}
    start = time.perf_counter()
    for p in sorted(paths):
        _ = pydicom.dcmread(p).pixel_array  # decoding is what is timed
    return time.perf_counter() - start, len(paths)


def real_size_copy(root: Path, dst: Path, side: int = 512) -> Path:
    """The spinal (Sagittal T2/STIR) series of a demo dataset rewritten at a real-data image size
    (the demo draws ~200 px images to stay small; real sagittal T2 is mostly 384-640 px). Pixels are
    resized bilinearly, Rows/Columns/PixelSpacing and the coordinates scaled to match."""
    import shutil

    import cv2
    import pandas as pd

    from harness.core import competition

    dst.mkdir()
    for name in (competition.TRAIN_CSV, competition.SERIES_CSV):
        shutil.copy(root / name, dst / name)
    series = pd.read_csv(root / competition.SERIES_CSV)
    coords = pd.read_csv(root / competition.COORDS_CSV)
    t2 = series[series["series_description"] == "Sagittal T2/STIR"]
    factors = {}
    for study, sid in zip(t2["study_id"], t2["series_id"]):
        out = dst / competition.TRAIN_IMAGES / str(study) / str(sid)
        out.mkdir(parents=True)
        for f in sorted((root / competition.TRAIN_IMAGES / str(study) / str(sid)).glob("*.dcm")):
            ds = pydicom.dcmread(f)
            img = ds.pixel_array
            fx, fy = side / ds.Columns, side / ds.Rows
            ds.PixelData = cv2.resize(img, (side, side), interpolation=cv2.INTER_LINEAR).astype(img.dtype).tobytes()
            ds.Rows = ds.Columns = side
            ds.PixelSpacing = [float(ds.PixelSpacing[0]) / fy, float(ds.PixelSpacing[1]) / fx]
            ds.save_as(out / f.name)
            factors[sid] = (fx, fy)
    keep = coords["series_id"].isin(factors)
    coords = coords[keep].copy()
    coords["x"] *= coords["series_id"].map(lambda s: factors[s][0])
    coords["y"] *= coords["series_id"].map(lambda s: factors[s][1])
    coords.to_csv(dst / competition.COORDS_CSV, index=False)
    return dst


def build_in_fresh_process(root: Path, cache_dir: Path) -> dict:
    """Run `--build-only` in a new interpreter, so its peak memory is its own."""
    out = subprocess.run([sys.executable, __file__, "--build-only", str(root), str(cache_dir)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_only(root: Path, cache_dir: Path):
    from harness.data import cache
    from harness.data.rsna import data_fingerprint, load_samples

    table, cfg = load_samples(root), v9_data()
    start = time.perf_counter()
    built = cache.open_or_build(table, cfg, data_fingerprint(root), cache_dir)
    seconds = time.perf_counter() - start
    mb = lambda who: resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"samples": len(table.samples), "seconds": seconds, "cache_mb": built.manifest["bytes"] / 2**20,
                      "peak_rss_mb_main": mb(resource.RUSAGE_SELF),
                      "peak_rss_mb_worker": mb(resource.RUSAGE_CHILDREN)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, nargs=2, default=[40, 120], help="two dataset sizes (demo studies)")
    ap.add_argument("--direct-samples", type=int, default=60, help="samples timed on the decoding path")
    ap.add_argument("--out", default=str(Path(__file__).with_name("loader.json")))
    ap.add_argument("--build-only", nargs=2, metavar=("ROOT", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        return build_only(*map(Path, args.build_only))

    from harness.data import cache, preprocess
    from harness.data.dataset import DirectSource, SliceDataset
    from harness.data.demo import generate_demo
    from harness.data.rsna import data_fingerprint, load_samples

    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "python": platform.python_version(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        tmp = Path(tmp)
        roots = {}
        for n in args.studies:
            roots[n] = generate_demo(tmp / f"demo{n}", studies=n, seed=0)
            results["sizes"][n] = build_in_fresh_process(roots[n], tmp / f"cache{n}")

        class NoSliceMemo:  # every epoch decodes: clear the per-process slice memo before each sample
            def __init__(self, source):
                self.source = source

            def __getitem__(self, i):
                preprocess._full_slice.cache_clear()
                return self.source[i]

        n = max(args.studies)  # the speed comparison on the larger dataset, and on real-size images
        datasets = {"demo": roots[n], "real_size": real_size_copy(roots[min(args.studies)], tmp / "real_size")}
        for (data, root), profile in itertools.product(datasets.items(), ("full", "smoke")):
            table, cfg = load_samples(root), v9_data(profile)
            order = np.random.default_rng(0).permutation(len(table.samples))
            every = np.arange(len(table.samples))
            built = cache.open_or_build(table, cfg, data_fingerprint(root), tmp / f"cache-{data}")
            direct = NoSliceMemo(DirectSource(table, cfg))
            cached = SliceDataset(table, every, cfg, True, "none", 42, built)
            decoding = SliceDataset(table, every, cfg, True, "none", 42, direct)
            samples_per_s(cached, order[:50])  # the page cache warm, as from the second epoch on
            r = {"img_size": cfg.img_size, "samples": len(table.samples),
                 "region_side_px": int(np.median([p.regions[3].shape[0] for p in map(built.__getitem__, order[:20])])),
                 "decoding_samples_per_s": samples_per_s(decoding, order[:args.direct_samples]),
                 "cached_samples_per_s": samples_per_s(cached, order),
                 "decoding_prepare_per_s": samples_per_s(direct, order[:args.direct_samples]),
                 "cached_prepare_per_s": samples_per_s(built, order)}
            r["speedup_samples"] = r["cached_samples_per_s"] / r["decoding_samples_per_s"]
            r["speedup_prepare"] = r["cached_prepare_per_s"] / r["decoding_prepare_per_s"]
            results[f"v9_{profile}_{data}"] = r
        root, cfg = roots[n], v9_data()
        table = load_samples(root)

        bare_s, files = bare_read_seconds(table, cfg)
        build = results["sizes"][n]
        results["bare_read_files_per_s"] = files / bare_s
        results["bare_read_seconds"] = bare_s
        results["build_seconds"] = build["seconds"]
        results["build_vs_bare_read"] = build["seconds"] / bare_s
        results["build_samples_per_s"] = build["samples"] / build["seconds"]
        small, large = (results["sizes"][k] for k in sorted(args.studies))
        results["samples_ratio"] = large["samples"] / small["samples"]
        results["peak_rss_ratio_main"] = large["peak_rss_mb_main"] / small["peak_rss_mb_main"]
        results["peak_rss_ratio_worker"] = large["peak_rss_mb_worker"] / small["peak_rss_mb_worker"]
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
