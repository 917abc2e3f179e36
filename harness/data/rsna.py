"""The Kaggle CSVs -> one sample table for a condition: a row per (study, level) annotation.

Follows the notebooks' join (docs/variants.md §1.2-1.3), row order included, because the folds depend on
it: labels melted column-major (level-major rows, train.csv study order), inner-joined with the
coordinates of the condition on its series description.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core import competition
from harness.core.errors import DataError

SAMPLE_COLUMNS = ("study_id", "series_id", "instance_number", "x", "y", "level", "level_idx", "label")


@dataclass
class SampleTable:
    """The samples of one condition, and what was dropped on the way (printed and logged)."""

    root: Path
    condition: str
    samples: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # the first dropped row per reason, in words
    # every labelled level (study_id, level, label) with `reason`: '' when it has a sample, else
    # no_coordinate, other_series or missing_image. Kaggle scores all of them.
    labelled: pd.DataFrame = field(default_factory=pd.DataFrame)
    other_series_studies: list[int] = field(default_factory=list)  # studies with points on another series type

    def image_path(self, study_id: int, series_id: int, instance: int) -> Path:
        # ids are validated integers (read_csv below), so they are safe to become path parts
        return self.root / competition.TRAIN_IMAGES / str(int(study_id)) / str(int(series_id)) / f"{int(instance)}.dcm"


def read_checked_csv(root: Path, name: str, columns: tuple[str, ...],
                     int_columns: tuple[str, ...]) -> pd.DataFrame:
    """A Kaggle CSV with its columns present and its id columns checked to be integers (they become
    paths); a missing or malformed file is a one-line DataError naming it."""
    path = root / name
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected the Kaggle layout, see docs/data.md)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r}")
    for col in int_columns:
        values = df[col]
        bad = values[values.isna() | ~values.fillna("").str.fullmatch(r"\d+")]
        if len(bad):
            raise DataError(f"{path}: column {col!r} must hold integers, row {bad.index[0] + 2} has {bad.iloc[0]!r}")
        df[col] = values.astype("int64")
    return df


OTHER_SERIES = ("drop", "use")  # data.other_series_points


def load_samples(root: str | Path, condition: str = "spinal_canal_stenosis",
                 other_series_points: str = "drop") -> SampleTable:
    """Read and join the CSVs; empty labels, rows without a coordinate and rows whose labelled
    DICOM file is missing are dropped and counted. A level whose only points lie on a series of
    another type (spinal points on Sagittal T1, say) is dropped as the notebooks did
    (`other_series_points="drop"`), or sampled on that series (`"use"`)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    if other_series_points not in OTHER_SERIES:
        raise ValueError(f"other_series_points must be one of {OTHER_SERIES}, got {other_series_points!r}")
    coord_name, series_desc = competition.CONDITIONS[condition]
    columns = tuple(f"{condition}_{lvl}" for lvl in competition.LEVELS)
    train = read_checked_csv(root, competition.TRAIN_CSV, ("study_id",) + columns, ("study_id",))
    coords = read_checked_csv(root, competition.COORDS_CSV, competition.COORDS_COLUMNS,
                              ("study_id", "series_id", "instance_number"))
    series = read_checked_csv(root, competition.SERIES_CSV, competition.SERIES_COLUMNS, ("study_id", "series_id"))

    # labels, level-major as pd.melt orders them
    melted = train.melt(id_vars="study_id", value_vars=list(columns), var_name="column", value_name="severity")
    melted["level"] = melted["column"].str[len(condition) + 1:]
    empty = melted["severity"].isna()
    labels = melted[~empty].copy()
    unknown = labels[~labels["severity"].isin(competition.SEVERITIES)]
    if len(unknown):
        raise DataError(f"{root / competition.TRAIN_CSV}: column {unknown['column'].iloc[0]!r} has the label "
                        f"{unknown['severity'].iloc[0]!r}; expected one of {', '.join(competition.SEVERITIES)}")
    labels["label"] = labels["severity"].map(competition.SEVERITIES.index).astype("int64")

    # coordinates of this condition, on its series description or (listed) on another one
    coords = coords.merge(series, on=["study_id", "series_id"], how="left")
    coords = coords[coords["condition"] == coord_name].copy()
    level_of = dict(zip(competition.LEVEL_LABELS, competition.LEVELS))
    coords["level"] = coords["level"].map(level_of)
    try:
        coords["x"], coords["y"] = coords["x"].astype(float), coords["y"].astype(float)
    except ValueError:
        raise DataError(f"{root / competition.COORDS_CSV}: columns 'x' and 'y' must hold numbers") from None
    expected = coords[coords["series_description"] == series_desc]
    other = coords[coords["series_description"].notna() & (coords["series_description"] != series_desc)]
    other = other[~_keys(other).isin(_keys(expected))]  # a level with a point on its own series keeps that one
    used = pd.concat([expected, other]) if other_series_points == "use" else expected

    merged = labels[["study_id", "level", "label"]].merge(
        used[["study_id", "level", "series_id", "instance_number", "x", "y"]], on=["study_id", "level"], how="left")
    no_coord = merged["series_id"].isna()
    on_other = no_coord & _keys(merged).isin(_keys(other))
    unseen = merged[no_coord].assign(reason=np.where(on_other[no_coord], "other_series", "no_coordinate"))
    merged = merged[~no_coord].astype({"series_id": "int64", "instance_number": "int64"})

    table = SampleTable(root, condition, merged)
    paths = [table.image_path(r.study_id, r.series_id, r.instance_number) for r in merged.itertuples()]
    exists = [path.is_file() for path in paths]
    table.examples = _drop_examples(root, condition, melted, empty, unseen, paths, exists, other)
    merged = merged[pd.Series(exists, index=merged.index, dtype=bool)].reset_index(drop=True)
    merged["level_idx"] = merged["level"].map(competition.LEVELS.index).astype("int64")
    table.samples = merged[list(SAMPLE_COLUMNS)]
    table.labelled = _labelled(labels, table.samples, unseen)
    table.dropped = {"empty_label": int(empty.sum()), "no_coordinate": int((~on_other[no_coord]).sum()),
                     "other_series": int(on_other.sum()), "missing_image": int(len(exists) - sum(exists))}
    table.other_series_studies = sorted(int(s) for s in other["study_id"].unique())
    if table.samples.empty:
        raise DataError(f"{root}: no usable {condition} samples (labels with a coordinate on {series_desc} "
                        f"and an image file)")
    return table


def _keys(df: pd.DataFrame) -> pd.Series:
    """'study_level' strings: the identity of a labelled level (Kaggle's row_id less the condition)."""
    return df["study_id"].astype(str) + "_" + df["level"].astype(str)


def _labelled(labels: pd.DataFrame, samples: pd.DataFrame, unseen: pd.DataFrame) -> pd.DataFrame:
    """Every labelled level of the condition once, with why it has no sample ('' when it has one)."""
    out = labels[["study_id", "level", "label"]].reset_index(drop=True)
    keys = _keys(out)
    reason = pd.Series("missing_image", index=out.index)  # had a coordinate, but no file to read
    unseen_reason = dict(zip(_keys(unseen), unseen["reason"]))
    reason[keys.isin(unseen_reason)] = keys[keys.isin(unseen_reason)].map(unseen_reason)
    reason[keys.isin(_keys(samples))] = ""
    return out.assign(reason=reason)


def _drop_examples(root: Path, condition: str, melted: pd.DataFrame, empty: pd.Series, unseen: pd.DataFrame,
                   paths: list[Path], exists: list[bool], other: pd.DataFrame) -> dict[str, str]:
    """One named example per drop reason, so a run's opening lines say where to look."""
    out = {}
    if empty.any():
        all_empty = empty.groupby(melted["study_id"]).all()
        study = all_empty[all_empty].index.min() if all_empty.any() else melted.loc[empty.idxmax(), "study_id"]
        # only this condition's five columns were read: the study's other conditions may be labelled
        out["empty_label"] = (f"study {study} has no {condition} label at any level" if all_empty.any()
                              else f"first: study {study}")
    no_coord = unseen[unseen["reason"] == "no_coordinate"]
    if len(no_coord):
        out["no_coordinate"] = f"first: study {no_coord['study_id'].iloc[0]} {no_coord['level'].iloc[0]}"
    if len(other):
        row = other.sort_values(["study_id", "level"]).iloc[0]
        out["other_series"] = (f"first: study {row['study_id']} {row['level']} on {row['series_description']} "
                               f"series {row['series_id']}")
    missing = [p for p, ok in zip(paths, exists) if not ok]
    if missing:
        folder = missing[0].parent
        out["missing_image"] = (f"first: series folder {folder.relative_to(root)} missing" if not folder.is_dir()
                                else f"first: {missing[0].relative_to(root)} missing")
    return out


def data_fingerprint(root: str | Path) -> str:
    """Hash of the three training CSVs: the identity of a dataset for folds and run tags."""
    h = hashlib.sha256()
    for name in (competition.TRAIN_CSV, competition.COORDS_CSV, competition.SERIES_CSV):
        h.update((Path(root) / name).read_bytes())
    return h.hexdigest()[:16]
