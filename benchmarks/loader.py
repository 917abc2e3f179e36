"""Loader benchmark (issue 3, DESIGN.md "Performance"), everything side by side in one run.

1. samples/s of the v9 sample pipeline decoding every DICOM each epoch vs reading the preprocessing
   cache (target: the cache at least 50x faster);
2. cache build rate vs a bare pydicom read (dcmread + pixel_array) of the same files;
3. peak memory while building the caches of two dataset sizes, each build in a fresh process
   (target: flat).

    python benchmarks/loader.py [--studies 40 120] [--out benchmarks/loader.json]

Demo datasets are generated into a temporary folder; nothing else is touched.
"""
from __future__ import annotations

import argparse
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


def v9_data(img_size: int = 256):
    """v9's full-profile data settings (window 50/350, CLAHE, crop 256 + jitter 16), no augmentation:
    the comparison is about where the deterministic part comes from."""
    from harness.registry import get_variant
    from harness.runner import build_config

    sets = {"data.augment": "none", "data.img_size": img_size}
    return build_config(get_variant("v9"), 0, "full", None, sets, None).data


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
        pydicom.dcmread(p).pixel_array
    return time.perf_counter() - start, len(paths)


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
                      "peak_rss_mb_main": mb(resource.RUSAGE_SELF), "peak_rss_mb_worker": mb(resource.RUSAGE_CHILDREN)}))


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

        n = max(args.studies)  # the speed comparison on the larger dataset
        root, cfg = roots[n], v9_data()
        table = load_samples(root)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(table.samples))
        built = cache.open_or_build(table, cfg, data_fingerprint(root), tmp / f"cache{n}")
        cached = SliceDataset(table, np.arange(len(table.samples)), cfg, True, "none", 42, built)
        direct = SliceDataset(table, np.arange(len(table.samples)), cfg, True, "none", 42, DirectSource(table, cfg))

        class NoSliceMemo:  # every epoch decodes: clear the per-process slice memo before each sample
            def __getitem__(self, i):
                preprocess._full_slice.cache_clear()
                return direct.source[i]
        direct.source = NoSliceMemo()
        samples_per_s(cached, order[:50])  # warm the page cache the way a second epoch would be
        results["direct_samples_per_s"] = samples_per_s(direct, order[:args.direct_samples])
        results["cached_samples_per_s"] = samples_per_s(cached, order)
        results["cache_speedup"] = results["cached_samples_per_s"] / results["direct_samples_per_s"]

        bare_s, files = bare_read_seconds(table, cfg)
        build = results["sizes"][n]
        results["bare_read_files_per_s"] = files / bare_s
        results["bare_read_seconds"] = bare_s
        results["build_seconds"] = build["seconds"]
        results["build_vs_bare_read"] = build["seconds"] / bare_s
        small, large = (results["sizes"][k] for k in sorted(args.studies))
        results["samples_ratio"] = large["samples"] / small["samples"]
        results["peak_rss_ratio_main"] = large["peak_rss_mb_main"] / small["peak_rss_mb_main"]
        results["peak_rss_ratio_worker"] = large["peak_rss_mb_worker"] / small["peak_rss_mb_worker"]
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
