"""An ablation's result: the table (factor, leave-one-in, leave-one-out, verdict; or the Shapley values, or
the greedy steps), its JSON, the waterfall plot, printed and logged to the ablation's parent run."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from rich.console import Console

from harness.ablation.effects import effect_text
from harness.compare import report as compare_report
from harness.compare.version_level import finite
from harness.tracking import plots
from harness.tracking.writer import RunWriter


def table(result: dict) -> pd.DataFrame:
    """One row per factor (per step for greedy), effects in BA points with their 95% intervals."""
    path, rows = result["path"], result["rows"]
    if path == "both":
        return pd.DataFrame([{"factor": r["factor"], "leave-one-in (A + f)": effect_text(r["leave_one_in"]),
                              "leave-one-out (B - f)": effect_text(r["leave_one_out"]),
                              "p (Holm) in / out": f"{r['leave_one_in']['p_holm']:.3g} / "
                                                   f"{r['leave_one_out']['p_holm']:.3g}",
                              "verdict": r["verdict"]} for r in rows])
    if path == "shapley":
        return pd.DataFrame([{"factor": r["factor"], "Shapley value": effect_text(r["shapley"]),
                              "p (Holm)": f"{r['shapley']['p_holm']:.3g}", "verdict": r["verdict"]} for r in rows])
    return pd.DataFrame([{"step": r["step"], "factor": r["factor"], "gain": effect_text(r["gain"]),
                          "p (Holm)": f"{r['gain']['p_holm']:.3g}", "BA after": f"{100 * r['ba_after']:.1f}",
                          "verdict": r["verdict"]} for r in rows])


def waterfall_steps(result: dict) -> list[dict]:
    """The bars from A to B: leave-one-in effects and what they leave unexplained, or Shapley values, or steps."""
    key = {"both": "leave_one_in", "shapley": "shapley", "greedy": "gain"}[result["path"]]
    steps = [{"label": r["factor"], **{k: r[key][k] for k in ("estimate", "low", "high")}} for r in result["rows"]]
    if result["path"] == "both":  # leave-one-in effects need not add up to B - A: the rest is interaction
        rest = result["total"]["estimate"] - sum(s["estimate"] for s in steps)
        steps.append({"label": "interactions", "estimate": rest, "low": float("nan"), "high": float("nan")})
    return steps


def headline(result: dict) -> str:
    t = result["total"]
    return (f"ablation {result['a']} -> {result['b']} ({result['path']}, {result['budget']}): "
            f"BA {100 * result['ba_a']:.1f} -> {100 * result['ba_b']:.1f}, B - A {effect_text(t)} points; "
            f"{result['epoch_note']}")


def markdown(result: dict) -> str:
    notes = [f"- {n}" for n in result["notes"]]
    return "\n".join([f"# {headline(result)}", "", compare_report.markdown(table(result)), "", *notes]) + "\n"


def print_result(result: dict, console: Console) -> None:
    console.print(headline(result), highlight=False)
    console.print(compare_report.rich_table("", table(result)))
    for note in result["notes"]:
        console.print(f"- {note}", highlight=False, markup=False)


def figure(result: dict):
    title = f"{result['a']} -> {result['b']}: {result['path']} ablation ({result['budget']})"
    return plots.waterfall((result["a"], result["ba_a"]), waterfall_steps(result), (result["b"], result["ba_b"]), title)


def log_to_parent(result: dict, writer: RunWriter) -> None:
    """Table (CSV and Markdown), JSON, waterfall plot and one metric per effect on the parent run."""
    key = {"both": ("leave_one_in", "leave_one_out"), "shapley": ("shapley",), "greedy": ("gain",)}[result["path"]]
    metrics = {"ba_a": result["ba_a"], "ba_b": result["ba_b"], "total": result["total"]["estimate"]}
    for r in result["rows"]:
        for k in key:
            metrics[f"{k}/{r['factor']}"] = r[k]["estimate"]
    writer.metrics({k: v for k, v in metrics.items() if v is not None})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        table(result).to_csv(out / "ablation.csv", index=False)
        (out / "ablation.md").write_text(markdown(result))
        (out / "ablation.json").write_text(json.dumps(finite(result), indent=2, default=str))
        figure(result).savefig(out / "waterfall.png", dpi=110)
        writer.folder(tmp)
