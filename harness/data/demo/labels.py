"""The train labels: per condition and level a severity (or an empty label), which labelled levels
get no coordinate row, and the one study whose spinal coordinate rows name its Sagittal T1."""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

from harness.core.competition import CONDITIONS
from harness.data.demo.seeds import _seeds

SPINAL, LEFT_FORAMEN, RIGHT_FORAMEN, LEFT_RECESS, RIGHT_RECESS = range(5)  # CONDITIONS order
CONDITION_KEYS = tuple(CONDITIONS)

# ---- labels ---------------------------------------------------------------------------------
# Marginal (Normal/Mild, Moderate, Severe) probabilities per condition and level, after
# docs/data.md: spinal stenosis concentrates at L4/L5; foraminal ~78/18/4; subarticular ~72/19/9.5.
_SPINAL = ((.955, .034, .011), (.90, .06, .04), (.85, .09, .06), (.78, .13, .09), (.94, .04, .02))
_FORAMINAL = ((.78, .18, .04),) * 5
_SUBARTICULAR = ((.715, .19, .095),) * 5
LABEL_PROBS = np.array([_SPINAL, _FORAMINAL, _FORAMINAL, _SUBARTICULAR, _SUBARTICULAR])
STUDY_LATENT = 0.6  # weight of the per-study degeneration latent: severities correlate in a study
EMPTY_RATE = np.array([.0005, .001, .004, .026, .026])  # per condition, as in the real train.csv
NO_COORD_RATE = .002  # labelled study/levels without any coordinate row (not spinal)
# Spinal per level, L1/L2 .. L5/S1. In the real data 1.2% of the labelled spinal levels have no
# coordinate row, mostly at L1/L2 and L2/L3 (the top of the image, where annotators stopped short).
# These average 1.2% over the (nearly all labelled) levels, 85% of it at the two top levels; the
# floor of 0.3% below still lets a reader meet a missing lower level now and then.
SPINAL_NO_COORD_RATE = (.036, .015, .003, .003, .003)


def _labels_for(studies: int, seed: int) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Labels of the train studies: (severity, no_coordinate, spinal_on_t1). The first two are
    shaped (study, condition, level); severity is an index into SEVERITIES or -1 for an empty
    label. spinal_on_t1 is the index of the study whose spinal coordinate rows carry its Sagittal
    T1 series, or None."""
    rng = np.random.default_rng(_seeds(seed, studies).labels)
    labels = _draw_labels(rng, studies)
    no_coord = _draw_missing_coords(rng, labels)
    return labels, no_coord, _pick_spinal_on_t1(rng, labels, no_coord)


def _draw_labels(rng: np.random.Generator, studies: int) -> np.ndarray:
    # An ordinal probit: a study latent plus noise, cut at the quantiles of the target marginals,
    # keeps every per-level class balance exact in expectation while correlating a study's levels.
    latent = rng.standard_normal((studies, 1, 1))
    score = STUDY_LATENT * latent + np.sqrt(1 - STUDY_LATENT**2) * rng.standard_normal((studies, 5, 5))
    cuts = np.vectorize(NormalDist().inv_cdf)(LABEL_PROBS.cumsum(-1)[..., :2])
    labels = (score > cuts[..., 0]).astype(np.int8) + (score > cuts[..., 1])
    empty = rng.random(labels.shape) < EMPTY_RATE[:, None]
    if not empty[:, SPINAL].any():  # readers must meet an empty spinal label
        empty[rng.integers(studies), SPINAL, rng.integers(5)] = True
    return np.where(empty, -1, labels).astype(np.int8)


def _draw_missing_coords(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    rate = np.full(labels.shape[1:], NO_COORD_RATE)
    rate[SPINAL] = SPINAL_NO_COORD_RATE
    missing = (rng.random(labels.shape) < rate) & (labels >= 0)
    if not missing[:, SPINAL].any():  # readers must meet a labelled level with no coordinate
        study, level = np.argwhere(labels[:, SPINAL] >= 0)[0]
        missing[study, SPINAL, level] = True
    return missing


def _pick_spinal_on_t1(rng: np.random.Generator, labels: np.ndarray, no_coord: np.ndarray) -> int | None:
    # In the real data one study's spinal canal coordinate rows carry the series_id of its
    # Sagittal T1 instead of its Sagittal T2/STIR: a reader that trusts the row's series_id crops
    # T1, one that picks the series by description finds no spinal point for that study. Every
    # demo study has a Sagittal T1, so a candidate needs only a spinal coordinate row to move;
    # with a single candidate there is none, so a tiny demo keeps spinal rows on T2 to learn from.
    candidates = np.flatnonzero(((labels[:, SPINAL] >= 0) & ~no_coord[:, SPINAL]).any(-1))
    return int(rng.choice(candidates)) if len(candidates) >= 2 else None
