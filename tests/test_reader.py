"""The CSV reader's joins and drops, and the shared folds, on real demo files."""
import numpy as np
import pandas as pd
import pytest
from conftest import editable_copy

from harness.core import competition
from harness.core.errors import DataError
from harness.data.folds import fold_fingerprint, load_or_create, split_studies
from harness.data.rsna import data_fingerprint, load_samples


def test_one_row_per_labelled_level_with_coordinates(demo_root):
    table = load_samples(demo_root)
    s = table.samples
    assert list(s.columns) == ["study_id", "series_id", "instance_number", "x", "y", "level", "level_idx", "label"]
    train = pd.read_csv(demo_root / competition.TRAIN_CSV)
    coords = pd.read_csv(demo_root / competition.COORDS_CSV)
    series = pd.read_csv(demo_root / competition.SERIES_CSV)
    # expected rows computed independently from the CSVs
    spinal = coords[coords["condition"] == "Spinal Canal Stenosis"].merge(series, on=["study_id", "series_id"])
    spinal = spinal[spinal["series_description"] == "Sagittal T2/STIR"]
    with_coord = set(zip(spinal["study_id"], spinal["level"].str.lower().str.replace("/", "_")))
    labelled = {(sid, lvl) for _, r in train.iterrows() for lvl in competition.LEVELS
                for sid in [r["study_id"]] if isinstance(r[f"spinal_canal_stenosis_{lvl}"], str)}
    assert set(zip(s["study_id"], s["level"])) == labelled & with_coord
    columns = [f"spinal_canal_stenosis_{lv}" for lv in competition.LEVELS]
    assert table.dropped["empty_label"] == train[columns].isna().sum().sum()
    # a level without a point on Sagittal T2/STIR has none at all, or has one on another series type
    elsewhere = coords[coords["condition"] == "Spinal Canal Stenosis"].merge(series, on=["study_id", "series_id"])
    elsewhere = set(zip(elsewhere["study_id"], elsewhere["level"].str.lower().str.replace("/", "_"))) - with_coord
    assert table.dropped["no_coordinate"] == len(labelled - with_coord - elsewhere) > 0
    assert table.dropped["other_series"] == len((labelled - with_coord) & elsewhere) > 0
    # every labelled level is listed once, with why it has no sample
    why = dict(zip(zip(table.labelled["study_id"], table.labelled["level"]), table.labelled["reason"]))
    assert set(why) == labelled
    assert {k for k, r in why.items() if r == ""} == labelled & with_coord
    assert {k for k, r in why.items() if r == "other_series"} == (labelled - with_coord) & elsewhere
    # labels and the level index agree with train.csv
    row = s.iloc[0]
    assert competition.SEVERITIES[row.label] == train.set_index("study_id").loc[row.study_id,
                                                                                f"spinal_canal_stenosis_{row.level}"]
    assert competition.LEVELS[row.level_idx] == row.level
    # level-major order, as pd.melt gives it (it decides the folds)
    assert (np.diff(s["level_idx"].to_numpy()) >= 0).all()
    assert all(table.image_path(r.study_id, r.series_id, r.instance_number).is_file() for r in s.itertuples())


def test_every_condition_reads_from_its_series(demo_root):
    series = pd.read_csv(demo_root / competition.SERIES_CSV).set_index("series_id")["series_description"]
    for condition, (_, desc) in competition.CONDITIONS.items():
        s = load_samples(demo_root, condition).samples
        assert len(s) and set(series.loc[s["series_id"]]) == {desc}


def _copy(demo_root, tmp_path):
    return editable_copy(demo_root, tmp_path / "data")


def test_missing_image_rows_are_dropped(demo_root, tmp_path):
    dst = _copy(demo_root, tmp_path)
    coords = pd.read_csv(dst / competition.COORDS_CSV)
    first = coords[coords["condition"] == "Spinal Canal Stenosis"].index[0]
    coords.loc[first, "instance_number"] = 9999
    coords.to_csv(dst / competition.COORDS_CSV, index=False)
    assert load_samples(dst).dropped["missing_image"] == 1


@pytest.mark.parametrize("name, edit, needle", [
    (competition.TRAIN_CSV, lambda df: df.drop(columns=["spinal_canal_stenosis_l4_l5"]),
     "missing column 'spinal_canal_stenosis_l4_l5'"),
    (competition.TRAIN_CSV, lambda df: df.assign(spinal_canal_stenosis_l1_l2="Mild"), "has the label 'Mild'"),
    (competition.COORDS_CSV, lambda df: df.assign(study_id="../../etc"), "column 'study_id' must hold integers"),
    (competition.SERIES_CSV, lambda df: df.rename(columns={"series_description": "desc"}),
     "missing column 'series_description'"),
])
def test_malformed_csv_is_one_line_naming_the_file(demo_root, tmp_path, name, edit, needle):
    dst = _copy(demo_root, tmp_path)
    edit(pd.read_csv(dst / name)).to_csv(dst / name, index=False)
    with pytest.raises(DataError) as exc:
        load_samples(dst)
    assert needle in str(exc.value) and name in str(exc.value) and "\n" not in str(exc.value)


def test_missing_csv_is_named(demo_root, tmp_path):
    dst = _copy(demo_root, tmp_path)
    (dst / competition.COORDS_CSV).unlink()
    with pytest.raises(DataError, match="train_label_coordinates.csv: file not found"):
        load_samples(dst)


def test_folds_group_by_study_and_are_stable(demo_root, tmp_path):
    s = load_samples(demo_root).samples
    folds = split_studies(s, 5, 42)
    assert folds["study_id"].is_unique and set(folds["study_id"]) == set(s["study_id"])  # no study in two folds
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    assert split_studies(s, 5, 42).equals(folds)  # same every time
    persisted = load_or_create(s, tmp_path, "key", 5, 42)
    assert persisted.equals(folds) and (tmp_path / "folds-key-k5-s42.csv").is_file()
    # read back rather than recomputed: an edited table on disk is what every variant gets
    edited = persisted.assign(fold=persisted["fold"].iloc[::-1].to_numpy())
    edited.to_csv(tmp_path / "folds-key-k5-s42.csv", index=False)
    assert load_or_create(s, tmp_path, "key", 5, 42).equals(edited)
    assert split_studies(s, 5, 7)["fold"].tolist() != folds["fold"].tolist() or len(folds) < 6


def test_fingerprints(demo_root):
    s = load_samples(demo_root).samples
    assert fold_fingerprint(s) == fold_fingerprint(s.iloc[::-1])
    assert fold_fingerprint(s) != fold_fingerprint(s.iloc[1:])
    assert len(data_fingerprint(demo_root)) == 16


def test_left_and_right_subarticular_may_sit_on_different_axial_series(demo_root):
    coords = pd.read_csv(demo_root / competition.COORDS_CSV)
    sub = coords[coords["condition"].str.contains("Subarticular")]
    split = sub.groupby(["study_id", "level"])["series_id"].nunique()
    study, level = split[split > 1].index[0]  # the demo has such a study (as the real data does)
    level_key = level.lower().replace("/", "_")
    for side in ("left", "right"):
        s = load_samples(demo_root, f"{side}_subarticular_stenosis").samples
        got = s[(s["study_id"] == study) & (s["level"] == level_key)]["series_id"].tolist()
        want = sub[(sub["study_id"] == study) & (sub["level"] == level) &
                   (sub["condition"] == f"{side.title()} Subarticular Stenosis")]["series_id"].tolist()
        assert got == want


@pytest.mark.parametrize("condition", list(competition.CONDITIONS))
def test_every_condition_yields_samples_with_a_real_centre_slice(demo_root, condition):
    from harness.core.registry import get_variant
    from harness.core.run_config import build_config
    from harness.data.dataset import SliceDataset

    cfg = build_config(get_variant("v9"), 0, "smoke", None, {"data.condition": condition}, None)
    table = load_samples(demo_root, condition)
    item = SliceDataset(table, [0, len(table.samples) - 1], cfg.data, False, "none", 0)[1]
    centre = item["image"][cfg.data.num_slices // 2]
    assert centre.std() > 0.1  # decoded, windowed and cropped, not a blank slice
