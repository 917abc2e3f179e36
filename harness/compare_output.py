"""What `harness compare` shows and writes: the terminal table, CSV/Markdown/plots on request, and a
comparison run in MLflow (tag harness.kind=comparison) holding the same table and plots."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from rich.console import Console
from rich.table import Table

from harness import plots, tracking
from harness.compare import RunRecord
from harness.data.schema import CLASS_KEYS

SHORT = dict(zip(CLASS_KEYS, ("N", "M", "S")))


def _ci(value: dict) -> str:
    return f"{value['estimate']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"


TERMINAL = ("variant", "runs", "BA", "recall N", "recall M", "recall S", "final BA", "best epoch", "parameters",
            "train s", "alarms")  # the rest is in --json and --output


def variant_table(report: dict) -> pd.DataFrame:
    """One row per variant (the CSV and Markdown form; the terminal shows the TERMINAL columns)."""
    rows = []
    for s in report["variants"]:
        row = {"variant": s["variant"], "runs": len(s["runs"]), "BA": _ci(s["balanced_accuracy"]),
               "BA per run": "mean " + (f"{s['ba_mean']:.3f} sd {s['ba_std']:.3f}" if s["ba_std"] is not None
                                        else f"{s['ba_mean']:.3f} (one run)"),
               "final BA": round(s["final_ba"], 3)}
        row |= {f"recall {SHORT[c]}": _ci(s["recall"][c]) for c in CLASS_KEYS}
        row |= {f"precision {SHORT[c]}": round(s["precision"][c], 3) for c in CLASS_KEYS}
        row |= {"weighted log loss": round(s["weighted_log_loss"], 4),
                "competition score": "-" if s["competition_score_spinal"] is None
                else round(s["competition_score_spinal"], 4),
                "best epoch": ",".join(map(str, s["best_epoch"])),
                "parameters": f"{s['parameters']:,}" if s["parameters"] else "-",
                "train s": round(s["train_seconds"], 1), "alarms": ", ".join(s["alarms"]) or "none"}
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_table(report: dict) -> pd.DataFrame:
    return pd.DataFrame([{"variant": r["variant"], "vs": r["baseline"],
                          "BA difference": f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
                          if "difference" in r else "-",
                          "p": round(r["p_value"], 4) if "p_value" in r else "-",
                          "p (Holm)": round(r["p_holm"], 4) if "p_holm" in r else "-", "verdict": r["verdict"]}
                         for r in report["against_baseline"]])


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs the optional tabulate package)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def print_report(report: dict, console: Console):
    counts = "/".join(map(str, report["class_counts"]))
    console.print(f"fold {report['fold']}: {report['validation_samples']} shared validation samples "
                  f"({counts} N/M/S), baseline [bold]{report['baseline']}[/]")
    for frame, title in ((variant_table(report)[list(TERMINAL)], "per variant (selected epoch, 95% bootstrap intervals)"),
                         (baseline_table(report), "against the baseline (paired bootstrap, permutation test)")):
        if frame.empty:
            continue
        table = Table(title=title, title_justify="left")
        for col in frame.columns:
            table.add_column(str(col), overflow="fold")
        for row in frame.itertuples(index=False):
            table.add_row(*(str(v) for v in row))
        console.print(table)
    for r in report["against_baseline"]:
        console.print(f"- {r['verdict']}")


def figures(report: dict, runs: dict[str, list[RunRecord]]) -> dict:
    """file name -> figure: BA curves overlaid, recalls with intervals, confusion matrices side by side."""
    order = [s["variant"] for s in report["variants"]]
    return {"ba_curves.png": plots.ba_curves({v: runs[v][0].history for v in order}),
            "recall_intervals.png": plots.recall_intervals(report["variants"]),
            "confusion_matrices.png": plots.confusions({v: (runs[v][0].labels, runs[v][0].preds) for v in order})}


def write_files(report: dict, runs: dict[str, list[RunRecord]], out: Path) -> list[Path]:
    """CSV, Markdown, JSON and plots into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    variants, against = variant_table(report), baseline_table(report)
    variants.to_csv(out / "comparison.csv", index=False)
    if not against.empty:
        against.to_csv(out / "against_baseline.csv", index=False)
    md = ["# " + f"harness compare, fold {report['fold']} (baseline {report['baseline']})", "",
          markdown(variants), ""]
    if not against.empty:
        md += [markdown(against), ""]
    (out / "comparison.md").write_text("\n".join(md))
    (out / "comparison.json").write_text(json.dumps(report, indent=2))
    for name, fig in figures(report, runs).items():
        fig.savefig(out / name, dpi=110)
    return sorted(out.iterdir())


def log_comparison_run(report: dict, runs: dict[str, list[RunRecord]]) -> str:
    """A run of kind 'comparison' in the baseline's experiment, with the table, JSON and plots."""
    tracking.ensure_store()
    base = runs[report["baseline"]][0]
    exp = mlflow.get_run(base.run_id).info.experiment_id
    names = "-".join(s["variant"] for s in report["variants"])
    with mlflow.start_run(experiment_id=exp, run_name=f"compare-{names}-fold{report['fold']}",
                          tags={"harness.kind": "comparison", "harness.baseline": report["baseline"],
                                "harness.fold": str(report["fold"]),
                                "harness.compared_runs": ",".join(r for s in report["variants"] for r in s["runs"])}) as run:
        for s in report["variants"]:
            mlflow.log_metric(f"{s['variant']}/balanced_accuracy", s["balanced_accuracy"]["estimate"])
        for r in (r for r in report["against_baseline"] if "difference" in r):
            mlflow.log_metrics({f"{r['variant']}/ba_difference": r["difference"], f"{r['variant']}/p_holm": r["p_holm"]})
        with tempfile.TemporaryDirectory() as tmp:
            write_files(report, runs, Path(tmp))
            mlflow.log_artifacts(tmp)
        return run.info.run_id
