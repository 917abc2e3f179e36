"""Figures: a run's training curves and confusion matrix, and the overlays of `harness compare`."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display anywhere the harness runs
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from harness.core.competition import CLASS_KEYS, SEVERITIES


def curves(history: list[dict[str, float]], title: str):
    """Loss, per-class recall and BA per epoch: the three panels the notebooks plotted."""
    epochs = [h["epoch"] for h in history]  # numbered from 1
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(epochs, [h["train/loss"] for h in history], label="train")
    axes[0].plot(epochs, [h["val/loss"] for h in history], label="val")
    axes[0].set_title("loss")
    for key, name in zip(CLASS_KEYS, SEVERITIES):
        axes[1].plot(epochs, [h[f"val/recall/{key}"] for h in history], label=name)
    axes[1].set_title("validation recall")
    axes[2].plot(epochs, [h["val/balanced_accuracy"] for h in history], color="black")
    axes[2].set_title("validation balanced accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def draw_confusion(ax, matrix: np.ndarray, ticks, title: str, fontsize: int = 10):
    """Counts, with the row-normalised recall in each cell."""
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(3):
        for j in range(3):
            ax.text(j, i, f"{matrix[i, j]}\n{rows[i, j]:.2f}", ha="center", va="center", fontsize=fontsize,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(3), ticks)
    ax.set_yticks(range(3), ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)


def confusion(matrix: np.ndarray, title: str):
    """The selected epoch's confusion matrix of one run."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    draw_confusion(ax, matrix, SEVERITIES, title)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ harness compare
def ba_curves(histories: dict, title: str = ""):
    """Validation BA per epoch of several variants, overlaid (history: DataFrame indexed by epoch)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, history in histories.items():
        ax.plot(history.index, history["balanced_accuracy"], marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation balanced accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _interval_bars(ax, x, values: list[dict], width: float, color: str, label: str):
    """Bars at the estimates with error bars from low to high."""
    mid = np.array([v["estimate"] for v in values])
    err = np.array([[v["estimate"] - v["low"] for v in values], [v["high"] - v["estimate"] for v in values]])
    ax.bar(x, mid, width, yerr=err, capsize=3, color=color, label=label)


def recall_intervals(summaries: list[dict], title: str = ""):
    """Per-class recall (left panel) and BA (right panel) of each variant with their 95% intervals
    (Jeffreys per recall, MOVER for BA)."""
    fig, (rec, ba) = plt.subplots(1, 2, figsize=(10, 4.8), layout="constrained", gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / max(len(summaries), 1)
    for i, s in enumerate(summaries):
        color = f"C{i}"  # one colour per variant in both panels
        _interval_bars(rec, np.arange(len(CLASS_KEYS)) + i * width, [s["recall"][c] for c in CLASS_KEYS], width,
                       color, s["variant"])
        _interval_bars(ba, [i], [s["balanced_accuracy"]], 0.6, color, s["variant"])
    rec.set_xticks(np.arange(len(CLASS_KEYS)) + width * (len(summaries) - 1) / 2, SEVERITIES)
    rec.set_ylabel("recall (95% interval)")
    ba.set_xticks(range(len(summaries)), [s["variant"] for s in summaries])
    ba.set_ylabel("balanced accuracy (95% interval)")
    for ax in (rec, ba):
        ax.set_ylim(0, 1.05)  # headroom: an interval capped at 1.0 keeps its cap in view
        ax.grid(axis="y", alpha=0.3)
    fig.legend(*rec.get_legend_handles_labels(), loc="outside lower center", ncol=max(len(summaries), 1))
    fig.suptitle(title)
    return fig


def confusions(pairs: dict, title: str = ""):
    """Confusion matrices side by side: name -> (labels, predictions)."""
    from sklearn.metrics import confusion_matrix

    # square matrices in a wide, low figure lost their "predicted" labels: a taller figure, constrained layout
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 4.8), squeeze=False, layout="constrained")
    for ax, (name, (y, pred)) in zip(axes[0], pairs.items()):
        draw_confusion(ax, confusion_matrix(y, pred, labels=[0, 1, 2]), ["N", "M", "S"], name, fontsize=8)
    fig.suptitle(title)
    return fig


# ------------------------------------------------------------------ slice attention (harness.tracking.attention)
def attention_by_class(weights: np.ndarray, labels: np.ndarray, title: str):
    """Mean weight of each slice position per true class, with the 95% interval of the mean."""
    s = weights.shape[1]
    x = np.arange(s) - s // 2  # 0 = the labelled slice
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, name in enumerate(SEVERITIES):
        w = weights[labels == c]
        if not len(w):
            continue
        mean = w.mean(0)
        half = 1.96 * w.std(0, ddof=1) / np.sqrt(len(w)) if len(w) > 1 else np.zeros(s)
        line, = ax.plot(x, mean, marker="o", label=f"{name} (n={len(w)})")
        ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axhline(1 / s, color="grey", linestyle=":", label=f"uniform (1/{s})")
    ax.set_xticks(x)
    ax.set_xlabel("slice position relative to the labelled slice")
    ax.set_ylabel("mean slice weight (95% interval of the mean)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"slice attention by class: {title}")
    fig.tight_layout()
    return fig


def attention_examples(weights: np.ndarray, images: np.ndarray, labels: np.ndarray, probs: np.ndarray | None,
                       title: str):
    """One row per sample: its slices (channel 0 of (E,S,C,H,W), or (E,S,H,W)), each titled with its weight."""
    n, s = weights.shape
    fig, axes = plt.subplots(n, s, figsize=(1.6 * s, 1.8 * n + 0.6), squeeze=False)
    for row in range(n):
        for col, ax in enumerate(axes[row]):
            img = np.asarray(images[row, col], dtype=np.float64)
            img = img[0] if img.ndim == 3 else img
            span = img.max() - img.min()
            # per slice: a blank slice stays black instead of dividing by zero
            ax.imshow((img - img.min()) / span if span > 0 else np.zeros_like(img), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{weights[row, col]:.3f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            centre = col == s // 2
            for spine in ax.spines.values():  # the labelled slice outlined, the others bare
                spine.set_visible(centre)
                spine.set(color="red", linewidth=2.5)
        label = f"true: {SEVERITIES[labels[row]]}"
        if probs is not None:
            label += f"\npred: {SEVERITIES[int(probs[row].argmax())]} ({probs[row].max():.2f})"
        axes[row, 0].set_ylabel(label, fontsize=9)
    fig.suptitle(f"slice weights, labelled slice outlined: {title}")
    fig.tight_layout()
    return fig


def matrix_cells(cells, title: str):
    """A run matrix's cells: each cell's BA as a point per fold, one colour per seed, and the mean."""
    fig, ax = plt.subplots(figsize=(7, 4))
    seeds = sorted(cells["seed"].unique())
    for k, seed in enumerate(seeds):
        rows = cells[cells["seed"] == seed]
        offset = (k - (len(seeds) - 1) / 2) * 0.08
        ax.scatter(rows["fold"] + offset, rows["balanced_accuracy"], label=f"seed {seed}", zorder=3)
    ax.axhline(cells["balanced_accuracy"].mean(), color="black", lw=1, ls="--", label="mean over cells")
    ax.set_xticks(sorted(cells["fold"].unique()))
    ax.set_xlabel("fold")
    ax.set_ylabel("balanced accuracy (selected epoch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def waterfall(start: tuple[str, float], steps: list[dict], end: tuple[str, float], title: str = ""):
    """An ablation's factor effects as a waterfall from A's BA to B's: one floating bar per step (its label,
    estimate, low, high: an effect in BA units with its 95% interval as an error bar at the bar's end), then
    B. Green raises BA, red lowers it."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * (len(steps) + 2)), 4.8), layout="constrained")
    level = start[1]
    ax.bar([0], [start[1]], 0.6, color="0.55")
    for i, s in enumerate(steps, 1):
        ax.bar([i], [s["estimate"]], 0.6, bottom=level, color="C2" if s["estimate"] >= 0 else "C3")
        top = level + s["estimate"]
        if np.isfinite(s["low"]) and np.isfinite(s["high"]):
            ax.errorbar([i], [top], yerr=[[s["estimate"] - s["low"]], [s["high"] - s["estimate"]]], color="k",
                        capsize=4)
        ax.plot([i - 0.3, i + 1.3], [top, top], color="0.4", lw=0.8, ls=":")
        level = top
    ax.bar([len(steps) + 1], [end[1]], 0.6, color="0.35")
    ax.set_xticks(range(len(steps) + 2), [start[0], *(s["label"] for s in steps), end[0]], rotation=30, ha="right")
    ax.set_ylabel("balanced accuracy (effects with 95% intervals)")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    return fig
