"""`harness data check`: what in a Kaggle-layout dataset is usable, what is not, and can a run start.

The usable samples are exactly those `load_samples` yields (one join, in rsna.py); this module adds
the checks a run would otherwise meet as blank slices or wrong crops: missing folders and files,
undecodable DICOMs and coordinates outside their image.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pydicom

from harness.core import competition, threads
from harness.core.errors import DataError
from harness.data import dicom
from harness.data.rsna import SampleTable, load_samples, read_checked_csv

DEFAULT_CONDITION = "spinal_canal_stenosis"
NUM_FOLDS = 5  # data.num_folds' default; harness.core.config is not imported here as it pulls in torch
MAX_EXAMPLES = 5
CHUNK_SIZE = 64  # files per worker task: small enough for a smooth bar, large enough to amortise the IPC

# the table's condition column: the full names alone would take 32 of its 80 columns
SHORT_NAMES = {"spinal_canal_stenosis": "spinal", "left_neural_foraminal_narrowing": "left foraminal",
               "right_neural_foraminal_narrowing": "right foraminal", "left_subarticular_stenosis": "left subart.",
               "right_subarticular_stenosis": "right subart."}

# finding key -> what it counts (the human report's wording)
FINDINGS = {
    "studies_without_folder": "studies in train.csv without a folder",
    "series_without_folder": "listed series without a folder",
    "coordinates_series_unlisted": "coordinate rows on an unlisted series",
    "coordinates_other_series": "studies with points on a series of another type",
    "missing_instance_files": "labelled files missing",
    "unreadable_files": "unreadable labelled files",
    "coordinates_outside_image": "coordinates outside their image",
}


@dataclass
class Finding:
    """One kind of problem: how many, and the first few examples; count None = not checked (its CSV failed)."""

    count: int | None = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class ConditionReport:
    """Usable samples of one condition (as load_samples counts them) and what it dropped."""

    classes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(competition.CLASS_KEYS, 0))
    samples: int = 0
    studies: int = 0
    empty_labels: int = 0
    no_coordinate: int = 0
    other_series: int = 0  # labelled levels whose only points lie on a series of another type (dropped)
    other_series_studies: list[int] = field(default_factory=list)
    missing_image: int = 0
    unreadable: int = 0  # usable samples whose file does not decode
    outside_image: int = 0
    error: str | None = None  # load_samples' one-line DataError


@dataclass
class DataReport:
    """Everything `harness data check` prints; `to_dict` is its --json form."""

    root: str
    condition: str
    conditions: dict[str, ConditionReport]
    findings: dict[str, Finding]
    files_decoded: int
    runnable: bool
    reason: str | None
    warnings: list[str]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FileStatus:
    """What decoding one labelled file found: its error (None when it decodes) and its header size."""

    error: str | None
    rows: int | None
    columns: int | None


def check_dataset(root: str | Path, condition: str = DEFAULT_CONDITION, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None, num_folds: int = NUM_FOLDS) -> DataReport:
    """Check all five conditions at `root` and judge `condition`; `progress(done, total)` follows decoding."""
    if condition not in competition.CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}")
    root = Path(root)
    tables, conditions = {}, {}
    for cond in competition.CONDITIONS:
        try:
            tables[cond] = load_samples(root, cond)
            conditions[cond] = _condition_counts(tables[cond])
        except DataError as exc:
            conditions[cond] = ConditionReport(error=str(exc))

    findings = _layout_findings(root)
    findings["coordinates_other_series"] = _other_series(tables)
    paths = sorted({path for table in tables.values() for path in _sample_paths(table)})
    # the cores free right now: a decoder on a core busy elsewhere slows the check, it does not speed it
    status = inspect_files(paths, workers or threads.free_cores(), progress)
    findings["unreadable_files"] = _unreadable(root, paths, status)
    findings["coordinates_outside_image"] = Finding()
    for cond, table in tables.items():
        _add_image_problems(table, status, conditions[cond], findings["coordinates_outside_image"])

    reason = _blocking_reason(condition, conditions[condition], num_folds)
    warnings = [f"{FINDINGS[key]}: {f.count}" for key, f in findings.items() if f.count]
    return DataReport(str(root), condition, conditions, findings, len(paths), reason is None, reason, warnings)


def _condition_counts(table: SampleTable) -> ConditionReport:
    s = table.samples
    per_class = s["label"].value_counts()
    return ConditionReport(
        classes={key: int(per_class.get(i, 0)) for i, key in enumerate(competition.CLASS_KEYS)},
        samples=len(s), studies=int(s["study_id"].nunique()),
        empty_labels=table.dropped["empty_label"], no_coordinate=table.dropped["no_coordinate"],
        other_series=table.dropped["other_series"], other_series_studies=list(table.other_series_studies),
        missing_image=table.dropped["missing_image"])


def _other_series(tables: dict[str, SampleTable]) -> Finding:
    """Studies whose points of a condition lie on a series of another type (the notebooks drop
    those levels; data.other_series_points=use samples them on that series)."""
    found = [f"study {study} {cond}" for cond, table in tables.items() for study in table.other_series_studies]
    return Finding(len(found), _first(found))


def _sample_paths(table: SampleTable) -> list[str]:
    s = table.samples
    return [str(table.image_path(*ids)) for ids in zip(s["study_id"], s["series_id"], s["instance_number"])]


def _first(items, fmt=str) -> list[str]:
    return [fmt(item) for item in list(items)[:MAX_EXAMPLES]]


def _layout_findings(root: Path) -> dict[str, Finding]:
    """Missing folders and files, each reported once, at its highest missing folder."""
    # a deleted study is one problem, not also all its series and files
    images = root / competition.TRAIN_IMAGES
    train = _try_read(root, competition.TRAIN_CSV, ("study_id",), ("study_id",))
    series = _try_read(root, competition.SERIES_CSV, competition.SERIES_COLUMNS, ("study_id", "series_id"))
    coords = _try_read(root, competition.COORDS_CSV, competition.COORDS_COLUMNS,
                       ("study_id", "series_id", "instance_number"))
    findings = {key: Finding(count=None) for key in ("studies_without_folder", "series_without_folder",
                                                     "coordinates_series_unlisted", "missing_instance_files")}

    if train is not None:
        missing = [s for s in train["study_id"].drop_duplicates() if not (images / str(s)).is_dir()]
        findings["studies_without_folder"] = Finding(len(missing), _first(missing))
    if series is not None:
        pairs = series[["study_id", "series_id"]].drop_duplicates().itertuples(index=False)
        missing = [(st, se) for st, se in pairs
                   if (images / str(st)).is_dir() and not (images / str(st) / str(se)).is_dir()]
        findings["series_without_folder"] = Finding(len(missing), _first(missing, _ids))
    if coords is not None and series is not None:
        listed = coords.merge(series[["study_id", "series_id"]].drop_duplicates(), on=["study_id", "series_id"],
                              how="left", indicator=True)
        unlisted = listed[listed["_merge"] == "left_only"]
        pairs = unlisted[["study_id", "series_id"]].drop_duplicates().itertuples(index=False)
        findings["coordinates_series_unlisted"] = Finding(len(unlisted), _first(pairs, _ids))
    if coords is not None:
        files = coords[["study_id", "series_id", "instance_number"]].drop_duplicates().itertuples(index=False)
        missing = [ids for ids in files if (images / str(ids[0]) / str(ids[1])).is_dir()
                   and not (images / str(ids[0]) / str(ids[1]) / f"{ids[2]}.dcm").is_file()]
        findings["missing_instance_files"] = Finding(len(missing), _first(missing, _relative_path))
    return findings


def _try_read(root: Path, name: str, columns: tuple[str, ...], int_columns: tuple[str, ...]) -> pd.DataFrame | None:
    """The CSV with its ids checked to be integers (they become paths); None when it is unreadable."""
    # load_samples has already put the reason in the report
    try:
        return read_checked_csv(root, name, columns, int_columns)
    except DataError:
        return None


def _ids(pair) -> str:
    return f"{pair[0]}/{pair[1]}"


def _relative_path(ids) -> str:
    return f"{competition.TRAIN_IMAGES}/{ids[0]}/{ids[1]}/{ids[2]}.dcm"


def inspect_files(paths: list[str], workers: int,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, FileStatus]:
    """Decode every file with dicom.read_slice and read its header size, over `workers` processes."""
    chunks = [paths[i:i + CHUNK_SIZE] for i in range(0, len(paths), CHUNK_SIZE)]
    status: dict[str, FileStatus] = {}

    def collect(chunk_status: dict[str, FileStatus]) -> None:
        status.update(chunk_status)
        if progress is not None:
            progress(len(status), len(paths))

    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            collect(_inspect_chunk(chunk))
        return status
    # forkserver: forking the caller directly would copy a live progress-bar thread and its locks
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context(method))
    try:
        for future in as_completed([pool.submit(_inspect_chunk, chunk) for chunk in chunks]):
            collect(future.result())
    finally:
        pool.shutdown(cancel_futures=True)  # Ctrl-C does not wait for the queued chunks
    return status


def _inspect_chunk(paths: list[str]) -> dict[str, FileStatus]:
    return {path: _inspect_file(path) for path in paths}


def _inspect_file(path: str) -> FileStatus:
    rows = columns = error = None
    try:  # the header alone: a file whose pixels do not decode still has a size to check against
        header = pydicom.dcmread(path, stop_before_pixels=True)
        rows, columns = int(header.Rows), int(header.Columns)
    except Exception:  # noqa: BLE001 - read_slice below reports why
        pass
    try:
        dicom.read_slice(path)
    except Exception as exc:  # noqa: BLE001 - any failure makes the file unusable; keep its message
        error = _one_line(exc, path)
    return FileStatus(error, rows, columns)


def _one_line(exc: Exception, path: str) -> str:
    """The first line of the message, without the path that UnreadableSlice puts in front (the report adds its own)."""
    lines = str(exc).strip().splitlines()
    return lines[0].removeprefix(f"{path}: ") if lines else type(exc).__name__


def _unreadable(root: Path, paths: list[str], status: dict[str, FileStatus]) -> Finding:
    bad = [p for p in paths if status[p].error is not None]
    return Finding(len(bad), _first(bad, lambda p: f"{Path(p).relative_to(root)}: {status[p].error}"))


def _add_image_problems(table: SampleTable, status: dict[str, FileStatus], counts: ConditionReport,
                        outside: Finding) -> None:
    """Count the condition's samples on undecodable files and with (x, y) outside [0, Columns) x [0, Rows)."""
    for path, s in zip(_sample_paths(table), table.samples.itertuples()):
        st = status[path]
        counts.unreadable += st.error is not None
        if st.rows is None or (0 <= s.x < st.columns and 0 <= s.y < st.rows):
            continue
        counts.outside_image += 1
        outside.count += 1
        if len(outside.examples) < MAX_EXAMPLES:
            outside.examples.append(f"{_relative_path((s.study_id, s.series_id, s.instance_number))} "
                                    f"{table.condition} {s.level}: ({s.x:g}, {s.y:g}) outside "
                                    f"{st.columns}x{st.rows}")


def _blocking_reason(condition: str, counts: ConditionReport, num_folds: int) -> str | None:
    """Why a run of `condition` cannot start, or None when it can."""
    if counts.error:
        return counts.error
    if counts.studies < num_folds:
        return (f"{condition}: only {counts.studies} studies have usable samples, fewer than the "
                f"{num_folds} folds")
    empty = [name for name, key in zip(competition.SEVERITIES, competition.CLASS_KEYS) if not counts.classes[key]]
    if empty:
        return f"{condition}: no {' or '.join(empty)} samples; every class needs at least one"
    if counts.unreadable == counts.samples:
        return f"{condition}: none of the {counts.samples} labelled image files can be decoded"
    return None


def print_report(report: DataReport, console) -> None:
    """The human form: a table per condition, a table of problems, then the verdict on one line."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # Text() for paths and decoder messages: they may hold '[', which rich would read as markup
    samples = Table(title=Text(f"usable samples in {report.root}"), title_justify="left", box=box.SIMPLE_HEAD,
                    show_edge=False, padding=0)
    # short condition names and two-line headings keep the table within 80 columns at the real
    # dataset's four- and five-digit counts (tests/test_data_check.py renders it at 80)
    samples.add_column("condition", no_wrap=True)
    for heading in ("N/M", "Mod", "Sev", "studies", "empty\nlabel", "no\ncoord", "other\nseries", "no\nfile",
                    "bad\nfile", "off\nimage"):
        samples.add_column(heading, justify="right", no_wrap=True)
    for cond, c in report.conditions.items():
        if c.error:
            samples.add_row(SHORT_NAMES[cond], *["-"] * 10)
            continue
        samples.add_row(SHORT_NAMES[cond], *(str(v) for v in (
            *c.classes.values(), c.studies, c.empty_labels, c.no_coordinate, c.other_series, c.missing_image,
            c.unreadable, c.outside_image)))
    console.print(samples)
    console.print(Text("conditions: " + ", ".join(f"{SHORT_NAMES[c]} = {c}" for c in competition.CONDITIONS)),
                  style="dim")
    for error in dict.fromkeys(c.error for c in report.conditions.values() if c.error):
        console.print(Text(f"not loaded: {error}"))

    problems = Table(title=f"problems ({report.files_decoded} labelled files decoded)", title_justify="left",
                     box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    problems.add_column("problem", no_wrap=True)
    problems.add_column("count", justify="right")
    problems.add_column("first examples", overflow="fold")  # paths have no spaces to wrap at
    for key, finding in report.findings.items():
        count = "not checked" if finding.count is None else str(finding.count)
        problems.add_row(FINDINGS[key], count, Text("\n".join(finding.examples)))
    console.print()
    console.print(problems)

    if report.runnable:
        c = report.conditions[report.condition]
        n = len(report.warnings)
        warned = f"; {n} warning{'s' if n > 1 else ''}, see the problems" if n else ""
        console.print(Text(f"verdict: {report.condition} can run ({c.samples} samples from {c.studies} "
                           f"studies{warned})"))
    else:
        console.print(Text(f"verdict: {report.condition} cannot run: {report.reason}"))
