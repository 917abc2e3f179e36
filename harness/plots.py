"""Figures logged with every run: training curves and the confusion matrix of the selected epoch."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display anywhere the harness runs
import matplotlib.pyplot as plt
import numpy as np

from harness.data.schema import CLASS_KEYS, SEVERITIES


def curves(history: list[dict[str, float]], title: str):
    """Loss, per-class recall and BA per epoch: the three panels the notebooks plotted."""
    epochs = [h["epoch"] + 1 for h in history]
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
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion(matrix: np.ndarray, title: str):
    """Counts, with the row-normalised recall in each cell."""
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(3):
        for j in range(3):
            ax.text(j, i, f"{matrix[i, j]}\n{rows[i, j]:.2f}", ha="center", va="center",
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(3), SEVERITIES)
    ax.set_yticks(range(3), SEVERITIES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig
