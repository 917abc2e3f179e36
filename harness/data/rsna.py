"""The Kaggle CSVs -> one sample table for a condition: a row per (study, level) annotation.

Follows the notebooks' join (VARIANTS.md §1.2-1.3), row order included, because the folds depend on
it: labels melted column-major (level-major rows, train.csv study order), inner-joined with the
coordinates of the condition on its series description.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.data import schema
from harness.errors import DataError

SAMPLE_COLUMNS = ("study_id", "series_id", "instance_number", "x", "y", "level", "level_idx", "label")


@dataclass
class SampleTable:
    """The samples of one condition, and what was dropped on the way (printed and logged)."""

    root: Path
    condition: str
    samples: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # the first dropped row per reason, in words

    def image_path(self, study_id: int, series_id: int, instance: int) -> Path:
        # ids are validated integers (read_csv below), so they are safe to become path parts
        return self.root / schema.TRAIN_IMAGES / str(int(study_id)) / str(int(series_id)) / f"{int(instance)}.dcm"


def read_checked_csv(root: Path, name: str, columns: tuple[str, ...],
                     int_columns: tuple[str, ...]) -> pd.DataFrame:
    """A Kaggle CSV with its columns present and its id columns checked to be integers (they become
    paths); a missing or malformed file is a one-line DataError naming it."""
    path = root / name
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected the Kaggle layout, see RSNA_DATA.md)")
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


def load_samples(root: str | Path, condition: str = "spinal_canal_stenosis") -> SampleTable:
    """Read and join the CSVs; empty labels, rows without a coordinate and rows whose labelled
    DICOM file is missing are dropped and counted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    coord_name, series_desc = schema.CONDITIONS[condition]
    columns = tuple(f"{condition}_{lvl}" for lvl in schema.LEVELS)
    train = read_checked_csv(root, schema.TRAIN_CSV, ("study_id",) + columns, ("study_id",))
    coords = read_checked_csv(root, schema.COORDS_CSV, schema.COORDS_COLUMNS, ("study_id", "series_id", "instance_number"))
    series = read_checked_csv(root, schema.SERIES_CSV, schema.SERIES_COLUMNS, ("study_id", "series_id"))

    # labels, level-major as pd.melt orders them
    melted = train.melt(id_vars="study_id", value_vars=list(columns), var_name="column", value_name="severity")
    melted["level"] = melted["column"].str[len(condition) + 1:]
    empty = melted["severity"].isna()
    labels = melted[~empty].copy()
    unknown = labels[~labels["severity"].isin(schema.SEVERITIES)]
    if len(unknown):
        raise DataError(f"{root / schema.TRAIN_CSV}: column {unknown['column'].iloc[0]!r} has the label "
                        f"{unknown['severity'].iloc[0]!r}; expected one of {', '.join(schema.SEVERITIES)}")
    labels["label"] = labels["severity"].map(schema.SEVERITIES.index).astype("int64")

    # coordinates of this condition on its series description
    coords = coords.merge(series, on=["study_id", "series_id"], how="left")
    coords = coords[(coords["condition"] == coord_name) & (coords["series_description"] == series_desc)].copy()
    level_of = dict(zip(schema.LEVEL_LABELS, schema.LEVELS))
    coords["level"] = coords["level"].map(level_of)
    try:
        coords["x"], coords["y"] = coords["x"].astype(float), coords["y"].astype(float)
    except ValueError:
        raise DataError(f"{root / schema.COORDS_CSV}: columns 'x' and 'y' must hold numbers") from None

    merged = labels[["study_id", "level", "label"]].merge(
        coords[["study_id", "level", "series_id", "instance_number", "x", "y"]], on=["study_id", "level"], how="left")
    no_coord = merged["series_id"].isna()
    merged = merged[~no_coord].astype({"series_id": "int64", "instance_number": "int64"})

    table = SampleTable(root, condition, merged)
    paths = [table.image_path(r.study_id, r.series_id, r.instance_number) for r in merged.itertuples()]
    exists = [path.is_file() for path in paths]
    table.examples = _drop_examples(root, melted, empty, labels, merged, paths, exists)
    merged = merged[pd.Series(exists, index=merged.index, dtype=bool)].reset_index(drop=True)
    merged["level_idx"] = merged["level"].map(schema.LEVELS.index).astype("int64")
    table.samples = merged[list(SAMPLE_COLUMNS)]
    table.dropped = {"empty_label": int(empty.sum()), "no_coordinate": int(no_coord.sum()),
                     "missing_image": int(len(exists) - sum(exists))}
    if table.samples.empty:
        raise DataError(f"{root}: no usable {condition} samples (labels with a coordinate on {series_desc} "
                        f"and an image file)")
    return table


def _drop_examples(root: Path, melted: pd.DataFrame, empty: pd.Series, labels: pd.DataFrame,
                   with_coord: pd.DataFrame, paths: list[Path], exists: list[bool]) -> dict[str, str]:
    """One named example per drop reason, so a run's opening lines say where to look."""
    out = {}
    if empty.any():
        all_empty = empty.groupby(melted["study_id"]).all()
        study = all_empty[all_empty].index.min() if all_empty.any() else melted.loc[empty.idxmax(), "study_id"]
        out["empty_label"] = f"study {study} has no label at all" if all_empty.any() else f"first: study {study}"
    joined = labels[["study_id", "level"]].merge(with_coord[["study_id", "level"]], how="left", indicator=True)
    no_coord = joined[joined["_merge"] == "left_only"]
    if len(no_coord):
        out["no_coordinate"] = f"first: study {no_coord['study_id'].iloc[0]} {no_coord['level'].iloc[0]}"
    missing = [p for p, ok in zip(paths, exists) if not ok]
    if missing:
        folder = missing[0].parent
        out["missing_image"] = (f"first: series folder {folder.relative_to(root)} missing" if not folder.is_dir()
                                else f"first: {missing[0].relative_to(root)} missing")
    return out


def data_fingerprint(root: str | Path) -> str:
    """Hash of the three training CSVs: the identity of a dataset for folds and run tags."""
    h = hashlib.sha256()
    for name in (schema.TRAIN_CSV, schema.COORDS_CSV, schema.SERIES_CSV):
        h.update((Path(root) / name).read_bytes())
    return h.hexdigest()[:16]
