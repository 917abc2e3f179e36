"""What `harness compare` shows and writes, from a real report on fake finished runs in a real MLflow store:
the terminal tables at 80 and 100 columns, the numeric CSVs, and the figures read back from their Axes."""
import io

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import harness_cli
from matplotlib.container import BarContainer
from rich.cells import cell_len
from rich.console import Console
from test_compare import COUNTS, _log_run, _predictions

from harness.compare.comparison import compare
from harness.compare.report import figures, print_report, write_files
from harness.compare.runs import find_runs
from harness.core.competition import CLASS_KEYS, SEVERITIES

ORDER = ["v4", "v9", "v8"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """(report, runs, store folder): v4 on two seeds, v9 right on every Severe, v8 one sample from v4."""
    root = tmp_path_factory.mktemp("compare_output")
    (root / "mlruns").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the runs' artifacts land under the store's folder, as `harness run` leaves them
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        try:
            _log_run("v4", _predictions(40))
            _log_run("v4", _predictions(40), seed=43, epochs=3)
            _log_run("v9", _predictions(90))
            _log_run("v8", _predictions(40, flip_one=True))
            runs = find_runs(ORDER, 0, [])
            yield compare(runs, ORDER, "v4"), runs, root
        finally:
            mlflow.set_tracking_uri(None)
            plt.close("all")


def _ci(value: dict, sign: str = "") -> str:
    """An interval as the tables print it."""
    return f"{value['estimate']:{sign}.3f} [{value['low']:{sign}.3f}, {value['high']:{sign}.3f}]"


def _assert_readable(text: str, report: dict, width: int):
    """No line past `width`; each variant's intervals whole, on a line that starts with its name."""
    lines = text.splitlines()
    assert max(cell_len(line) for line in lines) <= width
    rows = {name: [line for line in lines if line.split()[:1] == [name]] for name in ORDER}
    for s in report["variants"]:
        row = "\n".join(rows[s["variant"]])
        for value in (s["balanced_accuracy"], *(s["recall"][c] for c in CLASS_KEYS)):
            assert _ci(value) in row
    for r in report["against_baseline"]:
        diff = {"estimate": r["difference"], "low": r["low"], "high": r["high"]}
        assert any(_ci(diff, "+") in line for line in rows[r["variant"]])
    words = " ".join(text.split())  # a verdict longer than the line wraps between its words
    assert all(r["verdict"] in words for r in report["against_baseline"])


@pytest.mark.parametrize("soft_wrap", [False, True])  # True: the console `harness` itself prints to
@pytest.mark.parametrize("width", [80, 100])
def test_terminal_tables_fit_the_width_and_keep_every_number_whole(compared, width, soft_wrap):
    report = compared[0]
    buffer = io.StringIO()
    print_report(report, Console(file=buffer, width=width, soft_wrap=soft_wrap, color_system=None))
    _assert_readable(buffer.getvalue(), report, width)
    assert "3, 4" in buffer.getvalue() or "4, 3" in buffer.getvalue()  # v4's two seeds' best epochs


def test_piped_to_a_file_the_table_fits_80_columns(compared):
    """With stdout a file and no COLUMNS, rich renders at 80: the tables must fit that."""
    report, _, root = compared
    res = harness_cli("compare", *ORDER, cwd=root, env={"COLUMNS": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    report_text, store_line = res.stdout.rstrip("\n").rsplit("\n", 1)  # the last line names the store: a long URI
    assert store_line.startswith("comparison run ")
    _assert_readable(report_text, report, 80)


def test_the_csvs_hold_typed_numbers(compared, tmp_path):
    report, runs, _ = compared
    write_files(report, runs, tmp_path)
    variants = pd.read_csv(tmp_path / "comparison.csv")
    against = pd.read_csv(tmp_path / "against_baseline.csv")
    for frame, text in ((variants, {"variant", "alarms"}), (against, {"variant", "baseline", "verdict"})):
        # text reads back as object (pandas 2) or str (pandas 3); every other column as float64 or int64
        assert {c for c, t in frame.dtypes.items() if pd.api.types.is_string_dtype(t)} == text
        assert {str(t) for c, t in frame.dtypes.items() if c not in text} == {"float64", "int64"}
    assert {c: str(variants[c].dtype) for c in ("runs", "best_epoch_min", "best_epoch_max", "parameters")} == \
        dict.fromkeys(("runs", "best_epoch_min", "best_epoch_max", "parameters"), "int64")
    assert {str(against[c].dtype) for c in ("paired_runs", "n_samples", "n_discordant")} == {"int64"}
    rows = variants.set_index("variant")
    for s in report["variants"]:
        row = rows.loc[s["variant"]]
        for name, value in (("balanced_accuracy", s["balanced_accuracy"]),
                            *((f"recall_{c}", s["recall"][c]) for c in CLASS_KEYS)):
            assert [row[name], row[f"{name}_low"], row[f"{name}_high"]] == \
                pytest.approx([value["estimate"], value["low"], value["high"]], abs=1e-12)
        assert row["parameters"] == 1234 and row["runs"] == len(s["runs"])
    assert (rows.loc["v4", "best_epoch_min"], rows.loc["v4", "best_epoch_max"]) == (3, 4)
    assert np.isnan(rows.loc["v9", "ba_std"]) and rows.loc["v4", "ba_std"] >= 0  # one run has no spread
    for r in report["against_baseline"]:
        row = against.set_index("variant").loc[r["variant"]]
        assert [row["ba_difference"], row["ba_difference_low"], row["ba_difference_high"], row["p_holm"]] == \
            pytest.approx([r["difference"], r["low"], r["high"], r["p_holm"]], abs=1e-12)
    assert "0.800 [" in (tmp_path / "comparison.md").read_text()  # the Markdown keeps the human form


def test_every_figure_is_titled_with_the_fold_and_its_class_counts(compared):
    report, runs, _ = compared
    figs = figures(report, runs)
    for fig in figs.values():
        title = fig.get_suptitle()
        assert title.startswith("fold 0:") and f"{sum(COUNTS)} validation samples" in title
        assert all(f"{n} {name}" in title for n, name in zip(COUNTS, SEVERITIES))
    assert [ax.get_title() for ax in figs["confusion_matrices.png"].axes] == ORDER


def _bars(ax) -> dict:
    """variant -> [bar heights..., error bar lows..., error bar highs...] of one panel."""
    out = {}
    for bars in (c for c in ax.containers if isinstance(c, BarContainer)):  # each bar() adds its error bars too
        segments = bars.errorbar.lines[2][0].get_segments()  # one vertical line (x, low) -> (x, high) per bar
        out[bars.get_label()] = [p.get_height() for p in bars] + [seg[0][1] for seg in segments] + \
            [seg[1][1] for seg in segments]
    return out


def _expected(values: list[dict]) -> list[float]:
    return [v[key] for key in ("estimate", "low", "high") for v in values]


def test_recall_panel_holds_recalls_only_and_ba_has_its_own(compared):
    report, runs, _ = compared
    fig = figures(report, runs)["recall_intervals.png"]
    (rec,) = [ax for ax in fig.axes if ax.get_ylabel().startswith("recall")]
    (ba,) = [ax for ax in fig.axes if ax.get_ylabel().startswith("balanced accuracy")]
    assert [t.get_text() for t in rec.get_xticklabels()] == list(SEVERITIES)
    assert [t.get_text() for t in ba.get_xticklabels()] == ORDER
    recall_bars, ba_bars = _bars(rec), _bars(ba)
    for s in report["variants"]:
        assert recall_bars[s["variant"]] == pytest.approx(_expected([s["recall"][c] for c in CLASS_KEYS]))
        assert ba_bars[s["variant"]] == pytest.approx(_expected([s["balanced_accuracy"]]))
    # v9's Severe interval is [1, 1]: its cap sits at 1.0, inside the axis
    assert report["variants"][1]["recall"]["severe"]["high"] == 1.0
    assert rec.get_ylim()[1] > 1.0 and ba.get_ylim()[1] > 1.0
