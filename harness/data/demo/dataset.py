"""The whole dataset folder: ids, the test study, the train studies, the CSVs and the marker,
written to a temporary sibling and renamed into place at the end."""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
from typing import Callable

import numpy as np

from harness.core.competition import TEST_IMAGES, TRAIN_IMAGES
from harness.data.demo.csvs import _write_csvs
from harness.data.demo.labels import _draw_labels, _labels_for
from harness.data.demo.marker import _write_marker
from harness.data.demo.parallel import PARALLEL_MIN_STUDIES, _train_studies
from harness.data.demo.seeds import _distinct_ints, _seeds
from harness.data.demo.study import _make_study

DEFAULT_STUDIES: int = 120
DEFAULT_SEED: int = 0


def generate_demo(out_dir: str | os.PathLike, studies: int = DEFAULT_STUDIES, seed: int = DEFAULT_SEED,
                  progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> pathlib.Path:
    """Write a synthetic dataset in the Kaggle layout to `out_dir` and return its path.

    Byte-identical for the same (studies, seed), whatever `workers` is: the train studies are drawn
    by that many processes (None: every core from PARALLEL_MIN_STUDIES studies on, else one), each
    from its own spawned seed; the processes are spawned, so a calling script needs the usual
    `if __name__ == "__main__":` guard. Everything is written to a sibling `<out_dir>.tmp-<pid>` first and
    renamed at the end, so an interrupted run leaves nothing at out_dir; an existing non-empty
    out_dir raises FileExistsError. `progress(done, total)` is called after each train study, in
    study order (the one test study is drawn before them)."""
    if studies < 1:
        raise ValueError(f"studies must be at least 1, got {studies}")
    if workers is None:
        workers = (os.cpu_count() or 1) if studies >= PARALLEL_MIN_STUDIES else 1
    out = pathlib.Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; refusing to write the demo there")
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():  # left by an earlier run of a process that had the same pid
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        _write_dataset(tmp, studies, seed, progress, workers)
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_dataset(root: pathlib.Path, studies: int, seed: int,
                   progress: Callable[[int, int], None] | None, workers: int = 1) -> None:
    seeds = _seeds(seed, studies)
    id_rng = np.random.default_rng(seeds.ids)
    taken: set[int] = set()
    # ids like the real ones: studies 7-10 digits (sorted, as train.csv is), series 8-10 digits
    study_ids = sorted(_distinct_ints(id_rng, studies, 10**6, 2**32, taken))
    test_id = _distinct_ints(id_rng, 1, 10**6, 2**32, taken)[0]
    series_ids = [_distinct_ints(id_rng, 4, 10**7, 2**32, taken) for _ in range(studies + 1)]
    labels, no_coord, spinal_on_t1 = _labels_for(studies, seed)

    test_rng = np.random.default_rng(seeds.test_study)
    hidden = _draw_labels(test_rng, 1)[0]
    test = _make_study(test_rng, root / TEST_IMAGES, test_id, series_ids[-1], hidden,
                       np.zeros_like(hidden, bool), seed)

    series_rows, coord_rows = [], []
    tasks = [(seeds.studies[i], root / TRAIN_IMAGES, study_id, series_ids[i], labels[i], no_coord[i], seed,
              i == spinal_on_t1) for i, study_id in enumerate(study_ids)]
    # closing: if progress() raises, the pool is shut down before the caller removes the folder
    with contextlib.closing(_train_studies(tasks, workers)) as outs:
        for i, out in enumerate(outs):
            series_rows += out.series_rows
            coord_rows += out.coord_rows
            if progress is not None:
                progress(i + 1, studies)

    _write_csvs(root, study_ids, labels, series_rows, coord_rows, test)
    _write_marker(root, studies, seed, None if spinal_on_t1 is None else study_ids[spinal_on_t1])
