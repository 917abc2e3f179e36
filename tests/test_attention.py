"""Slice attention of every registered variant on real demo batches, and its figures read back."""
import contextlib

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from harness.core.competition import SEVERITIES
from harness.core.overrides import apply_overrides
from harness.core.profiles import PROFILES
from harness.core.registry import get_variant, list_variants
from harness.data.dataset import SliceDataset, normalize_on_device
from harness.data.rsna import load_samples
from harness.tracking.attention import attention_figures, collect_slice_attention, pick_examples

VARIANTS = list_variants()
# what each notebook's pool returns: per-sample softmax weights, global learned ones (v8), or none (v7)
PER_SAMPLE = {"v4", "v5", "v6", "v9", "v10"}
GLOBAL = {"v8"}
PER_CLASS = (3, 3, 2)  # all the demo has of Severe; three of the others, so a median is not the mean


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _smoke(name):
    defaults = get_variant(name).defaults()
    return apply_overrides(defaults, PROFILES["smoke"](defaults), "smoke")


def _rows(table) -> list[int]:
    """The first PER_CLASS samples of each class, interleaved, so no class sits in one batch."""
    labels = table.samples["label"].to_numpy()
    per_class = [list(np.flatnonzero(labels == c)[:n]) for c, n in enumerate(PER_CLASS)]
    return [int(rows[k]) for k in range(max(PER_CLASS)) for rows in per_class if k < len(rows)]


def _setup(demo_root, name, uint8=False):
    cfg = _smoke(name)
    table = load_samples(demo_root, cfg.data.condition)
    ds = SliceDataset(table, _rows(table), cfg.data, False, "none", 0, uint8=uint8)
    torch.manual_seed(0)
    return cfg, get_variant(name).build_model(cfg), ds, DataLoader(ds, batch_size=3)  # 8 samples: three batches


def _on_cpu(cfg):
    """What Trainer.to_device does on the CPU: a uint8 hand-off is normalised, a float batch passes."""
    def to_device(batch):
        batch = dict(batch)
        if "zero" in batch:
            batch["image"] = normalize_on_device(batch["image"], batch.pop("zero"), cfg.data)
        return batch
    return to_device


@pytest.mark.parametrize("name", VARIANTS)
def test_slice_weights_of_every_variant(demo_root, name):
    cfg, model, ds, loader = _setup(demo_root, name)
    model.train()
    got = collect_slice_attention(model, loader, _on_cpu(cfg))
    assert model.training  # the caller's mode is restored
    if name not in PER_SAMPLE | GLOBAL:
        assert got is None
        return
    weights, labels = got
    s = cfg.data.num_slices
    assert weights.shape == (len(ds), s) and weights.dtype == np.float64
    assert labels.tolist() == ds.labels.tolist()  # the loader's order
    assert (weights >= 0).all()
    # every pool is a softmax over slices (v4/v10: each query's softmax row, averaged over queries)
    assert np.allclose(weights.sum(1), 1, atol=1e-5)
    if name in GLOBAL:  # input-independent: the softmax of the learned logits, the same for every sample
        expected = torch.softmax(model.aggregator.slice_logits.detach(), 0).numpy()
        assert np.allclose(weights, expected[None], atol=1e-6)
    else:  # per sample, and the same as one eval-mode forward of the whole set
        assert not np.allclose(weights, weights[:1])
        batch = next(iter(DataLoader(ds, batch_size=len(ds))))
        with torch.no_grad():
            direct = model.eval()(batch["image"], batch["level"])["attention"].numpy()
        assert np.allclose(weights, direct, atol=1e-5)


def test_weights_under_bfloat16_autocast_come_back_as_float64(demo_root):
    cfg, model, ds, loader = _setup(demo_root, "v9")
    model.eval()
    got = collect_slice_attention(model, loader, _on_cpu(cfg), lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert not model.training
    weights, _ = got
    assert weights.dtype == np.float64 and weights.shape == (len(ds), cfg.data.num_slices)
    assert np.allclose(weights.sum(1), 1, atol=2e-2)  # bfloat16 has 8 bits of mantissa


def test_examples_are_the_first_of_each_class_then_the_next_in_order():
    labels = np.array([2, 2, 0, 0, 2, 0])
    assert pick_examples(labels, 4).tolist() == [2, 3, 0, 1]  # firsts 0 and 2, then 1 and 3; by class
    assert pick_examples(labels, 1).tolist() == [2]
    assert pick_examples(labels, 10).tolist() == [2, 3, 5, 0, 1, 4]


@pytest.mark.parametrize("name,uint8", [("v9", False), ("v8", False), ("v5", True)])
def test_figures_plot_the_class_means_and_the_example_slices(demo_root, name, uint8):
    cfg, model, ds, loader = _setup(demo_root, name, uint8)
    s, examples = cfg.data.num_slices, 4
    predict = get_variant(name).predict
    figs = attention_figures(model, loader, _on_cpu(cfg), contextlib.nullcontext, ds, "v9 fold 0", examples,
                             predict=predict)
    assert set(figs) == {"attention_by_class.png", "attention_examples.png"}
    weights, labels = collect_slice_attention(model, loader, _on_cpu(cfg))

    ax, = figs["attention_by_class.png"].axes
    assert "v9 fold 0" in ax.get_title()
    lines = {line.get_label(): line for line in ax.get_lines()}
    for c, severity in enumerate(SEVERITIES):
        line = lines[f"{severity} (n={PER_CLASS[c]})"]
        assert np.array_equal(line.get_xdata(), np.arange(s) - s // 2)
        assert np.allclose(line.get_ydata(), weights[labels == c].mean(0), rtol=0, atol=1e-12)
    assert np.allclose(lines[f"uniform (1/{s})"].get_ydata(), 1 / s)

    fig = figs["attention_examples.png"]
    image_axes = [a for a in fig.axes if a.images]
    assert len(image_axes) == examples * s
    chosen = pick_examples(labels, examples)
    grid = np.array(image_axes, dtype=object).reshape(examples, s)
    for row, i in enumerate(chosen):
        assert [a.get_title() for a in grid[row]] == [f"{w:.3f}" for w in weights[i]]
        assert grid[row, 0].get_ylabel().startswith(f"true: {SEVERITIES[labels[i]]}\npred: ")
        centre = grid[row, s // 2]
        assert all(sp.get_visible() for sp in centre.spines.values())
        assert not any(sp.get_visible() for sp in grid[row, 0].spines.values())
        shown = centre.images[0].get_array()
        assert shown.min() == pytest.approx(0) and shown.max() == pytest.approx(1)  # scaled for display
    assert {labels[i] for i in chosen} == set(labels)


def test_no_figures_for_a_model_without_slice_weights(demo_root):
    cfg, model, ds, loader = _setup(demo_root, "v7")
    assert attention_figures(model, loader, _on_cpu(cfg), contextlib.nullcontext, ds, "v7") == {}
