"""What `harness compare` shows and writes: the terminal tables (model level, and version level when the
runs make a matrix), CSV/Markdown/plots on request, and a comparison run in MLflow (tag
harness.kind=comparison) holding the same tables and plots."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.compare.comparison import where
from harness.compare.planning import points
from harness.compare.runs import RunRecord
from harness.core.competition import CLASS_KEYS, SEVERITIES
from harness.tracking import plots, store
from harness.tracking.writer import RunWriter

SHORT = dict(zip(CLASS_KEYS, ("N", "M", "S")))


def _ci(value: dict) -> str:
    return f"{value['estimate']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"


def _epochs(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs))  # the spaces let a narrow column wrap between epochs, never inside one


def _p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"  # a fixed 4 decimals would print a tiny p as 0.0000


def variant_table(report: dict) -> pd.DataFrame:
    """One row per variant in human form (the Markdown table; the CSV is `variant_numbers`)."""
    rows = []
    for s in report["variants"]:
        row = {"variant": s["variant"], "runs": len(s["runs"]), "BA": _ci(s["balanced_accuracy"]),
               "BA per run": "mean " + (f"{s['ba_mean']:.3f} sd {s['ba_std']:.3f}" if s["ba_std"] is not None
                                        else f"{s['ba_mean']:.3f} (one run)"),
               "last BA": f"{s['final_ba']:.3f}"}
        row |= {f"recall {SHORT[c]}": _ci(s["recall"][c]) for c in CLASS_KEYS}
        row |= {f"precision {SHORT[c]}": f"{s['precision'][c]:.3f}" for c in CLASS_KEYS}
        row |= {"weighted log loss": f"{s['weighted_log_loss']:.4f}",
                "competition score": "-" if s["competition_score_spinal"] is None
                else f"{s['competition_score_spinal']:.4f}",
                "best epoch": _epochs(s["best_epoch"]),
                "parameters": f"{s['parameters']:,}" if s["parameters"] else "-",
                "train s": f"{s['train_seconds']:.1f}", "alarms": ", ".join(s["alarms"]) or "none"}
        rows.append(row)
    return pd.DataFrame(rows)


def version_table(report: dict) -> pd.DataFrame:
    """Version level against the baseline: cells, the mean difference with its interval, p, Holm, MDD."""
    rows = report.get("version_level", {}).get("rows", [])
    return pd.DataFrame([{"variant": r["variant"], "vs": r["baseline"], "cells": str(r.get("n_cells", 0)),
                          "BA difference": f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
                          if r.get("low") is not None else "-",
                          "p": _p(r["p_value"]) if r.get("p_value") is not None else "-",
                          "p (Holm)": _p(r["p_holm"]) if r.get("p_holm") is not None else "-",
                          "MDD pts": points(r.get("mdd"))} for r in rows])


def budget_table(report: dict) -> pd.DataFrame:
    """What moves one variant's BA: the SD over seeds, over folds, and one cell's sample standard error."""
    budget = report.get("version_level", {}).get("budget", {})
    return pd.DataFrame([{"variant": v, "cells": str(b["n_cells"]), "BA mean": f"{b['mean']:.3f}",
                          "seed SD": points(b["seed_sd"]), "fold SD": points(b["fold_sd"]),
                          "sample SE": points(b["sample_se"])} for v, b in budget.items()])


def baseline_table(report: dict) -> pd.DataFrame:
    """One row per variant against the baseline in human form (Markdown and terminal)."""
    return pd.DataFrame([{"variant": r["variant"], "vs": r["baseline"],
                          "BA difference": f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
                          if "difference" in r else "-",
                          "p": _p(r["p_value"]) if "p_value" in r else "-",
                          "p (Holm)": _p(r["p_holm"]) if "p_holm" in r else "-", "verdict": r["verdict"]}
                         for r in report["against_baseline"]])


# The CSVs hold numbers only, at full float precision (the tables round for reading; a CSV is for analysis).
TEXT = ("variant", "baseline", "alarms", "verdict")
INTEGERS = ("runs", "best_epoch_min", "best_epoch_max", "parameters", "paired_runs", "n_samples", "n_discordant",
            "n_cells", "n_folds")


def _interval(name: str, value: dict) -> dict:
    return {name: value.get("estimate"), f"{name}_low": value.get("low"), f"{name}_high": value.get("high")}


def _typed(rows: list[dict]) -> pd.DataFrame:
    """Rows as typed columns: nullable integers (a missing count stays blank, not 1234.0), floats, text."""
    frame = pd.DataFrame(rows)
    for col in frame.columns:
        if col not in TEXT:
            frame[col] = frame[col].astype("Int64" if col in INTEGERS else float)
    return frame


def variant_numbers(report: dict) -> pd.DataFrame:
    """One row per variant in numbers (comparison.csv): each interval as `<name>`, `<name>_low`, `<name>_high`."""
    rows = []
    for s in report["variants"]:
        row = {"variant": s["variant"], "runs": len(s["runs"]),
               **_interval("balanced_accuracy", s["balanced_accuracy"])}
        for c in CLASS_KEYS:
            row |= _interval(f"recall_{c}", s["recall"][c])
        row |= {f"precision_{c}": s["precision"][c] for c in CLASS_KEYS}
        # several seeds have several best epochs: their min and max keep the columns integer
        row |= {"ba_mean": s["ba_mean"], "ba_std": s["ba_std"], "final_ba": s["final_ba"],
                "best_epoch_min": min(s["best_epoch"]), "best_epoch_max": max(s["best_epoch"]),
                "weighted_log_loss": s["weighted_log_loss"], "competition_score_spinal": s["competition_score_spinal"],
                "parameters": s["parameters"], "train_seconds": s["train_seconds"],
                "alarms": ", ".join(s["alarms"]) or "none"}
        rows.append(row)
    return _typed(rows)


def baseline_numbers(report: dict) -> pd.DataFrame:
    """One row per variant against the baseline in numbers (against_baseline.csv); blank where no seed pairs."""
    return _typed([{"variant": r["variant"], "baseline": r["baseline"],
                    "ba_baseline": r.get("ba_a"), "ba_variant": r.get("ba_b"),  # both on the paired rows
                    **_interval("ba_difference", {"estimate": r.get("difference"), "low": r.get("low"),
                                                  "high": r.get("high")}),
                    "p_value": r.get("p_value"), "p_holm": r.get("p_holm"), "paired_runs": r.get("paired_runs"),
                    "n_samples": r.get("n_samples"), "n_discordant": r.get("n_discordant"), "verdict": r["verdict"]}
                   for r in report["against_baseline"]])


def version_numbers(report: dict) -> pd.DataFrame:
    """Version level in numbers (version_level.csv): the difference, interval, p, Holm, MDD and both budgets."""
    level = report["version_level"]
    rows = []
    for r in level["rows"]:
        budget_a, budget_b = level["budget"][r["baseline"]], level["budget"][r["variant"]]
        rows.append({"variant": r["variant"], "baseline": r["baseline"], "n_cells": r.get("n_cells"),
                     "n_folds": r.get("n_folds"), "ba_baseline": r.get("ba_a"), "ba_variant": r.get("ba_b"),
                     **_interval("ba_difference", {"estimate": r.get("difference"), "low": r.get("low"),
                                                   "high": r.get("high")}),
                     "p_value": r.get("p_value"), "p_holm": r.get("p_holm"), "mdd": r.get("mdd"),
                     **{f"{who}_{k}": b[k] for who, b in (("baseline", budget_a), ("variant", budget_b))
                        for k in ("seed_sd", "fold_sd", "sample_se")},
                     "verdict": r["verdict"]})
    return _typed(rows)


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs the optional tabulate package)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def terminal_tables(report: dict) -> list[tuple[str, pd.DataFrame]]:
    """(title, frame) of each terminal table; split three ways so that each fits 80 columns (what a pipe gets)."""
    summary = pd.DataFrame([{"variant": s["variant"], "runs": str(len(s["runs"])), "BA": _ci(s["balanced_accuracy"]),
                             "last\nBA": f"{s['final_ba']:.3f}", "best\nepoch": _epochs(s["best_epoch"]),
                             "parameters": f"{s['parameters']:,}" if s["parameters"] else "-",
                             "train\ns": f"{s['train_seconds']:.1f}"} for s in report["variants"]])
    recalls = pd.DataFrame([{"variant": s["variant"],
                             **{name: _ci(s["recall"][c]) for c, name in zip(CLASS_KEYS, SEVERITIES)}}
                            for s in report["variants"]])
    against = baseline_table(report).drop(columns="verdict", errors="ignore")  # the verdicts follow as whole lines
    tables = [("per variant (BA: selected epoch, optimistic; last BA: last epoch)", summary),
              ("recall per class, selected epoch (95% Jeffreys intervals)", recalls),
              ("model level: these trained models vs the baseline", against)]
    if "version_level" in report:
        tables += [("version level: the recipes vs the baseline, by fold and seed", version_table(report)),
                   ("what moves BA (points): seed SD, fold SD, sample SE", budget_table(report))]
    return tables


def rich_table(title: str, frame: pd.DataFrame) -> Table:
    """Single numbers never wrap and intervals wrap at their spaces, so a console too narrow for a table breaks
    lines between numbers, never inside one; names fold first."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for col in frame.columns:
        wraps = col in ("variant", "vs") or frame[col].astype(str).str.contains(" ").any()
        table.add_column(str(col), no_wrap=not wraps, overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*(Text(str(v)) for v in row))  # Text: a name holding [brackets] is not rich markup
    return table


def print_report(report: dict, console: Console):
    """Header, the terminal tables, alarms and verdicts."""
    counts = "/".join(map(str, report["class_counts"]))
    # soft_wrap=False: rich wraps these lines at words even on the CLI's soft-wrapping console
    console.print(f"{where(report)}: {report['validation_samples']} shared validation samples "
                  f"({counts} N/M/S), baseline [bold]{report['baseline']}[/]", soft_wrap=False)
    for title, frame in terminal_tables(report):
        if not frame.empty:
            console.print(rich_table(title, frame))
    alarms = [f"{s['variant']} ({', '.join(s['alarms'])})" for s in report["variants"] if s["alarms"]]
    console.print("alarms: " + ("; ".join(alarms) or "none"), soft_wrap=False, markup=False)
    console.print("model level:", soft_wrap=False)
    for r in report["against_baseline"]:
        console.print(f"- {r['verdict']}", soft_wrap=False, markup=False)
    if "version_level" in report:
        level = report["version_level"]
        console.print(f"version level ({level['method']}, MDD at 80% power; {level['epoch_note']}):", soft_wrap=False)
        for r in report["version_level"]["rows"]:
            console.print(f"- {r['verdict']}", soft_wrap=False, markup=False)


def figures(report: dict, runs: dict[str, list[RunRecord]]) -> dict:
    """file name -> figure: BA curves overlaid, recalls with intervals, confusion matrices side by side."""
    order, title = [s["variant"] for s in report["variants"]], figure_title(report)
    return {"ba_curves.png": plots.ba_curves({v: runs[v][0].history for v in order}, title),
            "recall_intervals.png": plots.recall_intervals(report["variants"], title),
            "confusion_matrices.png": plots.confusions({v: (runs[v][0].labels, runs[v][0].preds) for v in order},
                                                       title)}


def figure_title(report: dict) -> str:
    """The fold and its validation samples per class: what every figure's numbers were measured on."""
    counts = ", ".join(f"{n} {name}" for n, name in zip(report["class_counts"], SEVERITIES))
    return f"{where(report)}: {report['validation_samples']} validation samples ({counts})"


def write_files(report: dict, runs: dict[str, list[RunRecord]], out: Path) -> list[Path]:
    """CSV (numbers), Markdown (human form), JSON and plots into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    variants, against = variant_table(report), baseline_table(report)
    variant_numbers(report).to_csv(out / "comparison.csv", index=False)
    if not against.empty:
        baseline_numbers(report).to_csv(out / "against_baseline.csv", index=False)
    md = ["# " + f"harness compare, {where(report)} (baseline {report['baseline']})", "",
          markdown(variants), ""]
    if not against.empty:
        md += ["## model level: these trained models", "", markdown(against), ""]
    if "version_level" in report:
        version_numbers(report).to_csv(out / "version_level.csv", index=False)
        md += ["## version level: the recipes, paired by fold and seed", "", report["version_level"]["epoch_note"],
               "", markdown(version_table(report)), "", markdown(budget_table(report)), ""]
        md += [f"- {r['verdict']}" for r in report["version_level"]["rows"]] + [""]
    (out / "comparison.md").write_text("\n".join(md))
    (out / "comparison.json").write_text(json.dumps(report, indent=2))
    for name, fig in figures(report, runs).items():
        fig.savefig(out / name, dpi=110)
    return sorted(out.iterdir())


def log_comparison_run(report: dict, runs: dict[str, list[RunRecord]]) -> str:
    """A run of kind 'comparison' in the comparisons experiment beside the baseline's, with the table,
    JSON and plots."""
    store.ensure_store()
    base = runs[report["baseline"]][0]
    exp = store.comparison_experiment(store.find_run(base.run_id).info.experiment_id)  # off the training runs table
    names = "-".join(s["variant"] for s in report["variants"])
    folds = ",".join(map(str, report["folds"]))
    run_id = store.create_run(exp, f"compare-{names}-fold{folds}",
                              {"harness.kind": "comparison", "harness.baseline": report["baseline"],
                               "harness.fold": folds,
                               "harness.compared_runs": ",".join(r for s in report["variants"] for r in s["runs"])})
    writer = RunWriter(run_id)
    try:
        writer.metrics({f"{s['variant']}/balanced_accuracy": s["balanced_accuracy"]["estimate"]
                        for s in report["variants"]})
        for r in (r for r in report["against_baseline"] if "difference" in r):
            writer.metrics({f"{r['variant']}/ba_difference": r["difference"], f"{r['variant']}/p_holm": r["p_holm"]})
        for r in (r for r in report.get("version_level", {}).get("rows", []) if r.get("p_holm") is not None):
            writer.metrics({f"{r['variant']}/version/ba_difference": r["difference"],
                            f"{r['variant']}/version/p_holm": r["p_holm"]})
        with tempfile.TemporaryDirectory() as tmp:
            write_files(report, runs, Path(tmp))
            writer.folder(tmp)
    except BaseException:
        writer.end("FAILED")
        raise
    writer.end()
    return run_id
