"""`harness data check` on real demo files: clean, broken in known ways, and not runnable."""
import json
import shutil

import pandas as pd
import pydicom
import pytest
from conftest import editable_copy, harness_cli

from harness.core import competition
from harness.data.check import SHORT_NAMES, check_dataset, print_report
from harness.data.demo import MARKER
from harness.data.rsna import load_samples

SPINAL = "spinal_canal_stenosis"
SPINAL_COLUMNS = [f"{SPINAL}_{lvl}" for lvl in competition.LEVELS]


def copy_with_images(demo_root, dst, copied_studies=()):
    """An editable copy with the studies a test breaks copied and the others linked, per study."""
    editable_copy(demo_root, dst)
    images = dst / competition.TRAIN_IMAGES
    images.unlink()
    images.mkdir()
    for study in (demo_root / competition.TRAIN_IMAGES).iterdir():
        if int(study.name) in copied_studies:
            shutil.copytree(study, images / study.name)
        else:
            (images / study.name).symlink_to(study)
    return dst


def class_counts(root, condition):
    counts = load_samples(root, condition).samples["label"].value_counts()
    return {key: int(counts.get(i, 0)) for i, key in enumerate(competition.CLASS_KEYS)}


def relative(path, root):
    return str(path.relative_to(root))


def verdict_line(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("verdict: ")]
    assert len(lines) == 1, stdout
    return lines[0]


# ---- clean demo -----------------------------------------------------------------------------


def test_clean_demo_counts_are_load_samples_counts(demo_root):
    calls = []
    report = check_dataset(demo_root, workers=2, progress=lambda done, total: calls.append((done, total)))
    for condition in competition.CONDITIONS:
        table = load_samples(demo_root, condition)
        got = report.conditions[condition]
        assert got.error is None
        assert got.classes == class_counts(demo_root, condition)
        assert got.samples == len(table.samples) and got.studies == table.samples["study_id"].nunique()
        assert (got.empty_labels, got.no_coordinate, got.missing_image) == (
            table.dropped["empty_label"], table.dropped["no_coordinate"], table.dropped["missing_image"])
        assert got.unreadable == got.outside_image == 0
    # the demo's one study with its spinal points on Sagittal T1 is its only finding
    t1_study = json.loads((demo_root / MARKER).read_text())["spinal_on_t1_study"]
    other = report.findings.pop("coordinates_other_series")
    assert (other.count, other.examples) == (1, [f"study {t1_study} spinal_canal_stenosis"])
    assert report.conditions[SPINAL].other_series_studies == [t1_study]
    assert report.conditions[SPINAL].other_series == load_samples(demo_root).dropped["other_series"] > 0
    assert all(f.count == 0 and f.examples == [] for f in report.findings.values()), report.findings
    files = {(s.study_id, s.series_id, s.instance_number)
             for c in competition.CONDITIONS for s in load_samples(demo_root, c).samples.itertuples()}
    assert report.files_decoded == len(files)
    assert calls and calls[-1] == (len(files), len(files))
    assert report.runnable and report.reason is None
    assert report.warnings == ["studies with points on a series of another type: 1"]


def test_clean_demo_through_the_command(demo_root, workdir):
    res = harness_cli("data", "check", "--data-dir", str(demo_root), cwd=workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    samples = load_samples(demo_root).samples
    assert verdict_line(res.stdout) == (f"verdict: {SPINAL} can run ({len(samples)} samples from "
                                        f"{samples['study_id'].nunique()} studies; 1 warning, see the problems)")
    for condition in competition.CONDITIONS:  # each condition's row holds its three class counts
        name = SHORT_NAMES[condition]
        row = next(line[len(name):].split() for line in res.stdout.splitlines() if line.startswith(name + " "))
        assert row[0:3] == [str(n) for n in class_counts(demo_root, condition).values()]
    assert res.stderr == ""  # no bar and no noise when stderr is not a terminal

    as_json = harness_cli("data", "check", "--data-dir", str(demo_root), "--json", "--workers", "1", cwd=workdir)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["runnable"] is True and data["reason"] is None
    assert data["conditions"][SPINAL]["classes"] == class_counts(demo_root, SPINAL)


def test_the_table_fits_80_columns_at_the_real_datasets_counts(tmp_path):
    """The real dataset's counts (four and five digits) in a console 80 columns wide: no line
    longer, and every number whole on its condition's line."""
    from rich.console import Console

    from harness.data.check import ConditionReport, DataReport, Finding

    counts = {c: ConditionReport(classes={"normal_mild": 8664, "moderate": 1794, "severe": 927}, samples=11385,
                                 studies=1975, empty_labels=263, no_coordinate=118, other_series=5,
                                 missing_image=1024, unreadable=12, outside_image=10001)
              for c in competition.CONDITIONS}
    report = DataReport("/kaggle/input/rsna-2024-lumbar-spine-degenerative-classification", SPINAL, counts,
                        {"missing_instance_files": Finding(3, ["train_images/1/2/3.dcm"])}, 48692, True, None, [])
    console = Console(file=(tmp_path / "out.txt").open("w"), width=80, color_system=None)
    print_report(report, console)
    console.file.close()
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert max(map(len, lines)) <= 80, "\n".join(lines)
    for condition in competition.CONDITIONS:
        name = SHORT_NAMES[condition]
        row = next(line[len(name):].split() for line in lines if line.startswith(name + " "))
        assert row == ["8664", "1794", "927", "1975", "263", "118", "5", "1024", "12", "10001"]


# ---- a copy broken in known ways ------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(demo_root, tmp_path_factory):
    """The demo with one of each problem; returns (root, what was broken)."""
    spinal = load_samples(demo_root).samples
    series = pd.read_csv(demo_root / competition.SERIES_CSV)
    severe = set(spinal.loc[spinal["label"] == 2, "study_id"])
    studies = [s for s in spinal["study_id"].drop_duplicates().sort_values() if s not in severe]
    truncated_in, garbage_in, deleted, outside_in, emptied_in = studies[:5]  # Severe stays, so a run is possible

    root = copy_with_images(demo_root, tmp_path_factory.mktemp("broken") / "data", {truncated_in, garbage_in})
    images = root / competition.TRAIN_IMAGES

    def labelled_file(study, condition=SPINAL):
        samples = load_samples(demo_root, condition).samples
        r = samples[samples["study_id"] == study].iloc[0]
        return images / str(study) / str(r.series_id) / f"{r.instance_number}.dcm"

    truncated, garbage = labelled_file(truncated_in), labelled_file(garbage_in)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage.write_bytes(b"this is not a DICOM file\n" * 200)
    missing = labelled_file(truncated_in, "left_neural_foraminal_narrowing")
    missing.unlink()
    axial = series[(series["study_id"] == garbage_in) & (series["series_description"] == "Axial T2")]
    removed_series = int(axial["series_id"].iloc[0])
    shutil.rmtree(images / str(garbage_in) / str(removed_series))
    (images / str(deleted)).unlink()

    coords = pd.read_csv(root / competition.COORDS_CSV)
    row = coords[(coords["study_id"] == outside_in) & (coords["condition"] == "Spinal Canal Stenosis")].index[0]
    columns = pydicom.dcmread(images / str(outside_in) / str(coords.loc[row, "series_id"])
                              / f"{coords.loc[row, 'instance_number']}.dcm", stop_before_pixels=True).Columns
    coords.loc[row, "x"] = float(columns)  # x = Columns is the first column outside [0, Columns)
    unlisted = coords.loc[[row]].assign(series_id=1)  # a series id that train_series_descriptions.csv lacks
    pd.concat([coords, unlisted]).to_csv(root / competition.COORDS_CSV, index=False)

    train = pd.read_csv(root / competition.TRAIN_CSV)
    level = spinal[(spinal["study_id"] == emptied_in) & (spinal["label"] == 0)]["level"].iloc[0]
    train.loc[train["study_id"] == emptied_in, f"{SPINAL}_{level}"] = None
    train.to_csv(root / competition.TRAIN_CSV, index=False)
    return root, dict(truncated=truncated, garbage=garbage, missing=missing, deleted=deleted,
                      removed_series=f"{garbage_in}/{removed_series}", unlisted=f"{outside_in}/1",
                      outside_in=outside_in)


def test_each_problem_is_counted_once(broken, demo_root):
    root, b = broken
    report = check_dataset(root, workers=2)
    f = {key: (finding.count, finding.examples) for key, finding in report.findings.items()}
    assert f["studies_without_folder"] == (1, [str(b["deleted"])])
    assert f["series_without_folder"] == (1, [b["removed_series"]])
    assert f["coordinates_series_unlisted"] == (1, [b["unlisted"]])
    assert f["missing_instance_files"] == (1, [relative(b["missing"], root)])
    assert f["unreadable_files"][0] == 2
    assert sorted(e.split(":")[0] for e in f["unreadable_files"][1]) == sorted(
        relative(b[k], root) for k in ("truncated", "garbage"))
    assert f["coordinates_outside_image"][0] == 1
    assert f["coordinates_outside_image"][1][0].startswith(f"{competition.TRAIN_IMAGES}/{b['outside_in']}/")

    spinal = report.conditions[SPINAL]
    clean = load_samples(demo_root).dropped
    assert spinal.empty_labels == clean["empty_label"] + 1
    samples = load_samples(root).samples
    on_bad_files = [s for s in samples.itertuples()
                    if (s.study_id, s.series_id, s.instance_number) in {_ids(b["truncated"]), _ids(b["garbage"])}]
    assert spinal.unreadable == len(on_bad_files) > 0 and spinal.outside_image == 1
    for condition in competition.CONDITIONS:  # the usable counts are still exactly load_samples'
        assert report.conditions[condition].classes == class_counts(root, condition)
    assert report.runnable and report.reason is None and len(report.warnings) == 7  # 6 + the demo's other series


def _ids(path):
    return int(path.parent.parent.name), int(path.parent.name), int(path.stem)


def test_one_worker_and_many_give_the_same_report(broken):
    root, _ = broken
    assert check_dataset(root, workers=1).to_dict() == check_dataset(root, workers=3).to_dict()


def test_broken_copy_still_runs_through_the_command(broken, workdir):
    root, b = broken
    res = harness_cli("data", "check", "--data-dir", str(root), cwd=workdir)
    assert res.returncode == 0, res.stderr + res.stdout
    assert verdict_line(res.stdout).endswith("; 7 warnings, see the problems)")
    rows = {line.split("  ")[0]: line.split() for line in res.stdout.splitlines()}
    assert rows["unreadable labelled files"][3] == "2" and rows["coordinates outside their image"][4] == "1"
    assert relative(b["garbage"], root) in res.stdout  # the examples are shown whole


# ---- not runnable ---------------------------------------------------------------------------


def test_missing_train_csv_is_the_reason(demo_root, workdir):
    root = editable_copy(demo_root, workdir / "data")
    (root / competition.TRAIN_CSV).unlink()
    report = check_dataset(root, workers=1)
    assert not report.runnable and "train.csv: file not found" in report.reason
    assert report.findings["studies_without_folder"].count is None  # it needs train.csv
    res = harness_cli("data", "check", "--data-dir", str(root), cwd=workdir)
    assert res.returncode == 1, res.stderr + res.stdout
    assert verdict_line(res.stdout) == f"verdict: {SPINAL} cannot run: {report.reason}"
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_a_missing_class_blocks_only_its_condition(demo_root, workdir):
    root = editable_copy(demo_root, workdir / "data")
    train = pd.read_csv(root / competition.TRAIN_CSV)
    train[SPINAL_COLUMNS] = train[SPINAL_COLUMNS].replace("Severe", "Normal/Mild")
    train.to_csv(root / competition.TRAIN_CSV, index=False)

    human = harness_cli("data", "check", "--data-dir", str(root), cwd=workdir)
    assert human.returncode == 1, human.stderr + human.stdout
    as_json = harness_cli("data", "check", "--data-dir", str(root), "--json", cwd=workdir)
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert data["runnable"] is False and "no Severe samples" in data["reason"]
    assert verdict_line(human.stdout) == f"verdict: {SPINAL} cannot run: {data['reason']}"
    assert data["conditions"][SPINAL]["classes"]["severe"] == 0

    other = harness_cli("data", "check", "--data-dir", str(root), "--condition", "left_neural_foraminal_narrowing",
                        cwd=workdir)
    assert other.returncode == 0, other.stdout


def test_fewer_studies_than_folds(demo_root, tmp_path):
    root = editable_copy(demo_root, tmp_path / "data")
    train = pd.read_csv(root / competition.TRAIN_CSV)
    sampled = set(load_samples(root).samples["study_id"])
    train[train["study_id"].isin(sampled)].head(4).to_csv(root / competition.TRAIN_CSV, index=False)
    report = check_dataset(root, workers=1)
    assert not report.runnable and "only 4 studies" in report.reason and "5 folds" in report.reason


def test_nonexistent_data_dir_is_a_data_error(workdir):
    res = harness_cli("data", "check", "--data-dir", str(workdir / "nowhere"), cwd=workdir)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [f"error: --data-dir {workdir / 'nowhere'}: no such folder"]
    assert res.stdout == ""
