"""The preprocessing cache (docs/architecture.md "Data"): every sample's prepared crop regions, computed once
per dataset and preprocessing key, stored as one memory-mapped byte file plus a small index.

Layout of `<cache_dir>/<key>/`:
  regions.u8     all regions, back to back (uint8)
  index.npy      per (sample, slice): byte offset, h, w, channels, corner x0/y0, status
  manifest.json  the settings, the source signature, unreadable files, build figures
A build writes a temporary folder and renames it into place, so a crash leaves no half cache. The
source signature (names, sizes and mtimes of the series' files) is checked on every open; when the
files changed the cache is rebuilt.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock

from harness.core import threads
from harness.core.config import DataConfig
from harness.data.preprocess import PreparedSample, prepare_sample, preprocess_key, reach
from harness.data.rsna import SampleTable

VERSION = 1
INDEX_DTYPE = np.dtype([("offset", "<i8"), ("h", "<i4"), ("w", "<i4"), ("c", "<i2"), ("x0", "<i4"),
                        ("y0", "<i4"), ("status", "i1")])
CHUNK = 16  # samples per worker task: small enough for an even spread, big enough to amortise IPC


def source_signature(table: SampleTable) -> str:
    """Names, sizes and mtimes of every file in the series the samples use (stat only, no reads)."""
    h = hashlib.sha256()
    for study, series in sorted(set(zip(table.samples["study_id"], table.samples["series_id"]))):
        folder = table.image_path(study, series, 0).parent
        entries = sorted(os.scandir(folder), key=lambda e: e.name) if folder.is_dir() else []
        for e in entries:
            st = e.stat()
            h.update(f"{study}/{series}/{e.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


class PreprocessCache:
    """Read side: `cache[i]` is the PreparedSample of table row i, read from the memory map."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.manifest = json.loads((folder / "manifest.json").read_text())
        self.index = np.load(folder / "index.npy")
        size = (folder / "regions.u8").stat().st_size
        self.data = np.memmap(folder / "regions.u8", np.uint8, "r") if size else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> PreparedSample:
        regions, corners = [], []
        for e in self.index[i]:
            if e["status"] == 0:
                n = int(e["h"]) * int(e["w"]) * int(e["c"])
                shape = (int(e["h"]), int(e["w"])) + ((int(e["c"]),) if e["c"] > 1 else ())
                regions.append(self.data[e["offset"]:e["offset"] + n].reshape(shape))
            else:
                regions.append(None)
            corners.append((int(e["x0"]), int(e["y0"])))
        return PreparedSample(regions, corners, self.index[i]["status"].copy())

    @property
    def unreadable(self) -> list[list[str]]:
        """[path, reason] of every unreadable file the samples touch."""
        return self.manifest["unreadable"]


def _prepare_chunk(table: SampleTable, cfg: DataConfig, indices: list[int]):
    """Worker: prepared samples of a chunk, regions made contiguous bytes for the trip back."""
    out = []
    for i in indices:
        p = prepare_sample(table, i, cfg)
        out.append((i, [None if r is None else (r.shape, r.tobytes()) for r in p.regions], p.corners,
                    p.status, p.unreadable))
    return out


def _chunks(table: SampleTable) -> list[list[int]]:
    """Samples grouped by series, so a worker decodes the slices shared by a study's levels once."""
    order = table.samples.sort_values(["study_id", "series_id", "instance_number"], kind="stable").index
    order = list(order)
    return [order[i:i + CHUNK] for i in range(0, len(order), CHUNK)]


def _results(table, cfg, chunks, workers):
    """Chunk results in completion order, with a bounded number in flight (flat memory)."""
    if workers <= 1 or len(chunks) <= 1:
        for c in chunks:
            yield _prepare_chunk(table, cfg, c)
        return
    # fork: workers inherit the sample table instead of pickling it per task
    ctx = multiprocessing.get_context("fork")
    # one OpenCV thread in each worker, each being one of the free cores: inherited from this process
    # (a forked child cannot change it safely), which prepares nothing while they do
    with threads.single_threaded_opencv(), cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        pending, todo = set(), iter(chunks)
        for c in todo:
            pending.add(pool.submit(_prepare_chunk, table, cfg, c))
            if len(pending) >= 2 * workers:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        for f in cf.as_completed(pending):
            yield f.result()


def build(table: SampleTable, cfg: DataConfig, folder: Path, signature: str, key: str,
          workers: int | None = None, progress: Callable[[int, int], None] | None = None) -> PreprocessCache:
    """Prepare every sample of the table into `folder` (atomically); returns the opened cache."""
    # the cores free right now: processes on cores busy elsewhere would slow the build, not speed it
    workers = workers or threads.free_cores()
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n, s = len(table.samples), cfg.num_slices
    index = np.zeros((n, s), INDEX_DTYPE)
    unreadable: dict[str, str] = {}
    start, done, offset = time.perf_counter(), 0, 0
    try:
        with open(tmp / "regions.u8", "wb") as f:
            for chunk in _results(table, cfg, _chunks(table), workers):
                for i, regions, corners, status, bad in chunk:
                    for j, reg in enumerate(regions):
                        e = index[i, j]
                        e["x0"], e["y0"], e["status"] = corners[j][0], corners[j][1], status[j]
                        if reg is not None:
                            shape, raw = reg
                            e["offset"], e["h"], e["w"] = offset, shape[0], shape[1]
                            e["c"] = shape[2] if len(shape) == 3 else 1
                            f.write(raw)
                            offset += len(raw)
                    unreadable.update(bad)
                    done += 1
                if progress:
                    progress(done, n)
        np.save(tmp / "index.npy", index)
        seconds = time.perf_counter() - start
        manifest = {"version": VERSION, "key": key, "source_signature": signature, "samples": n,
                    "slices": s, "reach": reach(cfg), "settings": {k: v for k, v in vars(cfg).items()},
                    "bytes": offset, "build_seconds": round(seconds, 3), "workers": workers,
                    "unreadable": sorted([p, r] for p, r in unreadable.items())}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=list))
        _swap_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PreprocessCache(folder)


def _swap_in(tmp: Path, folder: Path):
    """Replace `folder` by `tmp`; if another process put a cache there first, theirs is as good."""
    if folder.exists():
        old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
        try:
            folder.rename(old)
        except OSError:
            return
        shutil.rmtree(old, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:
        pass  # a concurrent build won the race


@contextlib.contextmanager
def _builder_lock(folder: Path):
    """Held while a process checks and builds one cache; none where the cache root is read-only (a
    prebuilt cache on a mounted dataset), as nothing can be built there anyway."""
    lock = FileLock(f"{folder}.lock")
    try:
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def open_or_build(table: SampleTable, cfg: DataConfig, data_fp: str, cache_root: Path,
                  workers: int | None = None, progress: Callable[[int, int], None] | None = None,
                  notice: Callable[[str], None] = lambda msg: None) -> PreprocessCache:
    """The cache of these samples and settings: reused when its source files are unchanged,
    (re)built otherwise. `notice` receives one line saying which."""
    key = preprocess_key(cfg, data_fp)
    folder = Path(cache_root) / f"{cfg.condition}-{key}"
    signature = source_signature(table)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # one builder per cache: a second process (two runs, tuning workers) waits, then reuses its work
    with _builder_lock(folder):
        if (folder / "manifest.json").is_file():
            cache = PreprocessCache(folder)
            if cache.manifest["source_signature"] == signature and len(cache) == len(table.samples):
                notice(f"preprocessing cache {folder} (reused)")
                return cache
            notice(f"preprocessing cache {folder}: source files changed, rebuilding")
        else:
            notice(f"preprocessing cache {folder}: building {len(table.samples)} samples")
        return build(table, cfg, folder, signature, key, workers, progress)
