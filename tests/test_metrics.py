"""The competition score against a reference copy of Kaggle's metric (tests/kaggle_metric.py), on
constructed predictions whose answer is known."""
import kaggle_metric
import numpy as np
import pytest
from sklearn.metrics import log_loss

from harness.core.competition import LEVELS
from harness.metrics.classification import (
    Fallback,
    ValidationScorer,
    any_severe_spinal_loss,
    classification_metrics,
    competition_score_spinal,
    weighted_log_loss,
)

rng = np.random.default_rng(0)


def _rows(studies: int):
    """Five spinal levels per study, mostly Normal/Mild, with Moderate and Severe present."""
    ids = np.repeat(np.arange(1000, 1000 + studies), 5)
    levels = np.tile(LEVELS, studies)
    labels = rng.choice(3, size=len(ids), p=[0.7, 0.2, 0.1])
    labels[:3] = [0, 1, 2]
    probs = rng.dirichlet([4, 1, 1], size=len(ids))
    return ids, levels, labels, probs


def test_plain_predictions_agree_with_the_reference():
    ids, levels, labels, probs = _rows(40)
    assert competition_score_spinal(ids, labels, probs) == pytest.approx(
        kaggle_metric.spinal_score(ids, levels, labels, probs), abs=1e-12)


def test_confidently_wrong_rows_are_penalised_in_float64():
    ids, levels, labels, probs = _rows(30)
    wrong = np.arange(0, len(labels), 7)  # 1e-9 on the true class, the rest on another
    probs[wrong] = 0.5 - 0.5e-9
    probs[wrong, labels[wrong]] = 1e-9
    reference = kaggle_metric.spinal_score(ids, levels, labels, probs)
    assert competition_score_spinal(ids, labels, probs) == pytest.approx(reference, abs=1e-9)
    # float32 probabilities (what a model hands over) are scored as float64, not clipped at 1.2e-7
    assert competition_score_spinal(ids, labels, probs.astype(np.float32)) == pytest.approx(reference, rel=1e-6)
    # what float32 clipping hid: each wrong row's -log(1e-9) was cut to -log(1.19e-7), 4.78 nats less
    w = np.array([1.0, 2.0, 4.0])[labels]
    old = log_loss(labels, probs.astype(np.float32), sample_weight=w, labels=[0, 1, 2])
    hidden = w[wrong].sum() * np.log(np.finfo(np.float32).eps / 1e-9) / w.sum()
    assert weighted_log_loss(labels, probs) - old == pytest.approx(hidden, rel=1e-4)


def test_rows_that_do_not_sum_to_one_are_normalised_first():
    ids, levels, labels, probs = _rows(30)
    scaled = probs * rng.uniform(0.2, 3.0, size=(len(probs), 1))
    reference = kaggle_metric.spinal_score(ids, levels, labels, scaled)
    assert competition_score_spinal(ids, labels, scaled) == pytest.approx(reference, abs=1e-12)
    assert competition_score_spinal(ids, labels, scaled) == pytest.approx(competition_score_spinal(ids, labels, probs),
                                                                          abs=1e-12)


def test_a_severe_level_without_a_coordinate_is_scored_by_the_fallback():
    """Study 1000's only Severe level has no sample: without it the study's any_severe target is 0,
    Kaggle's is 1. The scorer adds it with the fallback prediction."""
    ids, levels, labels, probs = _rows(20)
    labels[ids == 1000] = [0, 0, 0, 0, 2]
    seen = ~((ids == 1000) & (levels == "l5_s1"))
    prior = np.array([0.85, 0.1, 0.05])
    scorer = ValidationScorer(ids[seen], True, Fallback(ids[~seen], labels[~seen], np.tile(prior, ((~seen).sum(), 1))))
    everything = np.where(seen[:, None], probs, prior)
    metrics = scorer(labels[seen], probs[seen])
    assert metrics["competition_score_spinal"] == pytest.approx(
        kaggle_metric.spinal_score(ids, levels, labels, everything), abs=1e-9)
    assert metrics["competition/any_severe_spinal_log_loss"] == pytest.approx(
        any_severe_spinal_loss(ids, labels, everything), abs=1e-12)
    # the model's rows alone would score the study as not severe: a different figure
    assert abs(metrics["competition_score_spinal"] - competition_score_spinal(ids[seen], labels[seen],
                                                                              probs[seen])) > 1e-3
    # BA, recalls and the weighted log loss stay on the samples the model saw
    for key, value in classification_metrics(labels[seen], probs[seen]).items():
        assert metrics[key] == value, key


def test_other_conditions_have_no_competition_score():
    ids, levels, labels, probs = _rows(5)
    assert "competition_score_spinal" not in ValidationScorer(ids, False)(labels, probs)
