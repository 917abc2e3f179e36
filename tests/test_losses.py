"""Losses against NumPy re-derivations of docs/variants.md §4.5-§9.5, mixup and class weights."""
import math

import numpy as np
import pytest
import torch

from harness.core.config import LossConfig
from harness.core.errors import DataError, UsageError
from harness.losses import LOSSES, build_loss, class_weights_from_counts

LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]])
BINARY = np.array([[0.4, -0.2], [-1.0, 1.0], [0.3, 0.3]])
SEVERITY = np.array([[0.9, 0.1], [0.2, -0.6], [1.2, 0.4]])
ORDINAL = np.array([[1.0, -1.0], [2.0, 0.5], [0.3, -0.7]])
Y = np.array([0, 2, 1])
Y_B = np.array([1, 0, 2])
W = np.array([1.0, 2.0, 4.0])
ROWS = np.arange(3)


def nll(logits):
    """-log softmax, per sample and class."""
    z = logits - logits.max(1, keepdims=True)
    return np.log(np.exp(z).sum(1, keepdims=True)) - z


def smoothed_ce(logits, y, w, eps):
    """PyTorch's per-sample CE (§4.5): (1-eps) w_y (-log p_y) + eps/3 sum_c w_c (-log p_c)."""
    n = nll(logits)
    return (1 - eps) * w[y] * n[np.arange(len(y)), y] + eps / 3 * (n * w).sum(1)


def bce(logits, targets):
    p = 1 / (1 + np.exp(-logits))
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean()


def ordinal_targets(y):
    return np.stack([y > 0, y > 1], 1).astype(float)


def weighted_ce_np(y, w=W):
    return (w[y] * nll(LOGITS)[ROWS, y]).sum() / w[y].sum()


def outputs(requires_grad=False, dtype=torch.float32):
    heads = {"logits": LOGITS, "binary": BINARY, "severity": SEVERITY, "ordinal": ORDINAL}
    return {k: torch.tensor(v, dtype=dtype, requires_grad=requires_grad) for k, v in heads.items()}


def batch(y=Y, **extra):
    return {"label": torch.tensor(y), "level": torch.zeros(len(y), dtype=torch.long)} | extra


def terms(cfg, out=None, b=None, class_weights=None):
    return {k: float(v) for k, v in build_loss(cfg, class_weights)(out or outputs(), b or batch()).items()}


# ----------------------------------------------------------------------------- weighted CE (v8, v9)

def test_weighted_ce_is_normalised_by_the_targets_weights():
    got = terms(LossConfig(name="weighted_ce", class_weights=tuple(W)))
    assert got.keys() == {"ce"}
    assert got["ce"] == pytest.approx(weighted_ce_np(Y), rel=1e-5)


def test_uniform_logits_give_log3_whatever_the_weights():
    out = {"logits": torch.zeros(3, 3)}
    got = build_loss(LossConfig(name="weighted_ce", class_weights=(1.0, 4.0, 6.0)))(out, batch())
    assert float(got["ce"]) == pytest.approx(math.log(3), rel=1e-6)


def test_class_weights_argument_replaces_the_configured_ones():
    got = terms(LossConfig(name="weighted_ce"), class_weights=(1.0, 2.0, 4.0))
    assert got["ce"] == pytest.approx(weighted_ce_np(Y), rel=1e-5)


# ----------------------------------------------------------------------------- focal

@pytest.mark.parametrize("weights, eps, gamma", [((1.0, 2.0, 4.0), 0.1, 2.5),        # v10
                                                 ((0.348, 1.190, 1.462), 0.1, 2.5),  # v4
                                                 ((1.0, 1.0, 1.0), 0.05, 2.0),       # v5
                                                 ((0.099, 1.156, 1.745), 0.1, 3.5)])  # baseline
def test_notebook_focal_takes_pt_from_the_weighted_smoothed_ce(weights, eps, gamma):
    cfg = LossConfig(name="focal", class_weights=weights, label_smoothing=eps, gamma=gamma)
    ce = smoothed_ce(LOGITS, Y, np.array(weights), eps)
    expected = ((1 - np.exp(-ce)) ** gamma * ce).mean()  # plain mean, not divided by the weights
    got = terms(cfg, out={"logits": outputs()["logits"]})
    assert got == pytest.approx({"focal": expected}, rel=1e-5)


def test_textbook_focal_takes_pt_from_the_true_class_probability():
    cfg = LossConfig(name="focal", class_weights=tuple(W), label_smoothing=0.1, gamma=2.5, focal_form="textbook")
    pt = np.exp(-nll(LOGITS)[ROWS, Y])
    expected = (W[Y] * (1 - pt) ** 2.5 * smoothed_ce(LOGITS, Y, np.ones(3), 0.1)).mean()
    got = terms(cfg, out={"logits": outputs()["logits"]})
    assert got["focal"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("form", ["notebook", "textbook"])
def test_focal_on_uniform_logits_by_hand(form):
    # p = 1/3 everywhere: ce = log 3, pt = 1/3, focal = (2/3)^2 log 3 in both forms
    loss = build_loss(LossConfig(name="focal", gamma=2.0, focal_form=form))
    got = loss({"logits": torch.zeros(3, 3)}, batch())
    assert float(got["focal"]) == pytest.approx((2 / 3) ** 2 * math.log(3), rel=1e-6)


def test_aux_heads_add_binary_ce_and_severity_ce_on_abnormal_samples():
    cfg = LossConfig(name="focal", class_weights=tuple(W), label_smoothing=0.1, gamma=2.5, aux_weight=0.1)
    got = terms(cfg)
    binary = nll(BINARY)[ROWS, (Y > 0).astype(int)].mean()
    severity = nll(SEVERITY[1:])[[0, 1], Y[1:] - 1].mean()  # samples 1 and 2 are abnormal
    assert got["aux_binary"] == pytest.approx(0.1 * binary, rel=1e-5)
    assert got["aux_severity"] == pytest.approx(0.1 * severity, rel=1e-5)
    assert got.keys() == {"focal", "aux_binary", "aux_severity"}


def test_severity_term_is_zero_without_abnormal_samples():
    out = outputs(requires_grad=True)
    got = build_loss(LossConfig(name="focal", aux_weight=0.1))(out, batch(np.zeros(3, dtype=np.int64)))
    assert float(got["aux_severity"].detach()) == 0.0
    sum(got.values()).backward()
    assert torch.all(out["severity"].grad == 0) and out["binary"].grad.abs().sum() > 0


def test_aux_weight_zero_or_no_aux_heads_gives_focal_only():
    assert terms(LossConfig(name="focal", aux_weight=0.0)).keys() == {"focal"}
    assert terms(LossConfig(name="focal"), out={"logits": outputs()["logits"]}).keys() == {"focal"}


# ----------------------------------------------------------------------------- ordinal (v6, v7)

def test_coral_ce_is_bce_on_cumulative_targets_plus_weighted_ce():
    got = terms(LossConfig(name="coral_ce", ce_weight=0.6))
    assert got["coral"] == pytest.approx(bce(ORDINAL, ordinal_targets(Y)), rel=1e-5)
    assert got["ce"] == pytest.approx(0.6 * nll(LOGITS)[ROWS, Y].mean(), rel=1e-5)
    assert got.keys() == {"coral", "ce"}


def test_focal_ordinal_is_unweighted_focal_plus_half_the_ordinal_bce():
    got = terms(LossConfig(name="focal_ordinal", gamma=2.0, ordinal_weight=0.5))
    ce = nll(LOGITS)[ROWS, Y]
    assert got["focal"] == pytest.approx(((1 - np.exp(-ce)) ** 2 * ce).mean(), rel=1e-5)
    assert got["ordinal"] == pytest.approx(0.5 * bce(ORDINAL, ordinal_targets(Y)), rel=1e-5)
    assert got.keys() == {"focal", "ordinal"}


# ----------------------------------------------------------------------------- mixup, dtype, gradients

LOSS_CONFIGS = [LossConfig(name="weighted_ce", class_weights=tuple(W)),
                LossConfig(name="focal", class_weights=tuple(W), label_smoothing=0.1, gamma=2.5),
                LossConfig(name="coral_ce"), LossConfig(name="focal_ordinal")]


@pytest.mark.parametrize("cfg", LOSS_CONFIGS, ids=lambda c: c.name)
def test_mixup_combines_every_term_over_both_labels(cfg):
    mixed = terms(cfg, b=batch(label_b=torch.tensor(Y_B), lam=torch.tensor(0.3)))
    plain, swapped = terms(cfg), terms(cfg, b=batch(Y_B))
    assert mixed.keys() == plain.keys()
    for name in plain:
        assert mixed[name] == pytest.approx(0.3 * plain[name] + 0.7 * swapped[name], rel=1e-5)


def test_mixup_weighted_ce_by_numpy():
    got = terms(LOSS_CONFIGS[0], b=batch(label_b=torch.tensor(Y_B), lam=torch.tensor(0.3)))
    assert got["ce"] == pytest.approx(0.3 * weighted_ce_np(Y) + 0.7 * weighted_ce_np(Y_B), rel=1e-5)


@pytest.mark.parametrize("cfg", LOSS_CONFIGS, ids=lambda c: c.name)
def test_terms_are_float32_and_gradients_reach_every_head_used(cfg):
    out = outputs(requires_grad=True, dtype=torch.bfloat16)
    got = build_loss(cfg)(out, batch())
    assert all(t.dtype == torch.float32 and t.ndim == 0 for t in got.values())
    sum(got.values()).backward()
    used = {"weighted_ce": ["logits"], "focal": ["logits", "binary", "severity"],
            "coral_ce": ["logits", "ordinal"], "focal_ordinal": ["logits", "ordinal"]}[cfg.name]
    for head in used:
        grad = out[head].grad.float()
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, head


# ----------------------------------------------------------------------------- class weights, errors

def test_inverse_weights_match_the_baseline_illustration():
    got = class_weights_from_counts([6800, 581, 385], "inverse")
    assert got == pytest.approx((0.099, 1.156, 1.745), abs=1e-3)


def test_inverse_sqrt_weights_match_v4_illustration():
    got = class_weights_from_counts([6800, 581, 385], "inverse_sqrt")
    assert got == pytest.approx((0.348, 1.190, 1.462), abs=1e-3)


def test_inverse_sqrt_clips_after_normalising():
    # 1/sqrt(n) = (0.1, 0.1, 1) -> sum 3 gives (0.25, 0.25, 2.5) -> clipped to [0.3, 2]
    assert class_weights_from_counts([100, 100, 1], "inverse_sqrt") == pytest.approx((0.3, 0.3, 2.0), rel=1e-5)


def test_fixed_rule_keeps_the_configured_weights_whatever_the_counts():
    assert class_weights_from_counts(np.array([6800, 0, 385]), "fixed", (1.0, 2.0, 4.0)) == (1.0, 2.0, 4.0)
    assert class_weights_from_counts(np.array([5, 5, 5]), "inverse", (1.0, 2.0, 4.0)) == pytest.approx((1.0, 1.0, 1.0))


def test_inverse_rule_refuses_a_missing_class():
    with pytest.raises(DataError, match="class_weight_rule=inverse"):
        class_weights_from_counts([10, 0, 3], "inverse")


def test_derived_rule_without_derived_weights_is_refused():
    with pytest.raises(ValueError, match="inverse_sqrt"):
        build_loss(LossConfig(name="focal", class_weight_rule="inverse_sqrt"))


def test_unknown_loss_name_is_a_one_line_usage_error():
    with pytest.raises(UsageError) as exc:
        build_loss(LossConfig(name="hinge"))
    message = str(exc.value)
    assert "loss.name='hinge'" in message and all(name in message for name in LOSSES) and "\n" not in message
