"""Health alarms: each fires on a history that has the problem, stays silent on one that does not and
exactly at its threshold; config overrides reach them; tag format."""
import pytest
from scipy.stats import linregress

from harness.core.config import AlarmConfig, Config
from harness.core.errors import UsageError
from harness.core.overrides import apply_overrides
from harness.metrics.alarms import (
    alarm_tags,
    dead_class,
    health_alarms,
    instability,
    majority_ceiling,
    overfitting,
    peak_then_decline,
)

D = AlarmConfig()


def epoch(i, ba=0.6, normal=0.8, moderate=0.5, severe=0.5, counts=(60, 25, 15), train=0.5, val=0.6):
    """One history row with the keys MlflowEpochLogger records."""
    row = {"epoch": i, "train/loss": train, "val/loss": val, "val/balanced_accuracy": ba,
           "val/recall/normal_mild": normal, "val/recall/moderate": moderate, "val/recall/severe": severe}
    row |= {f"val/pred_count/{k}": c for k, c in zip(("normal_mild", "moderate", "severe"), counts)}
    return row


def history(bas=None, n=10, rows=None):
    """n epochs (or one per BA); rows: {index: {epoch() argument: value}}."""
    healthy = [0.5, 0.55, 0.6, 0.62, 0.63, 0.64, 0.64, 0.65, 0.65, 0.65]  # rise, then a plateau
    bas = bas or (healthy + [0.65] * n)[:n]
    return [epoch(i, ba=ba, **(rows or {}).get(i, {})) for i, ba in enumerate(bas)]


def test_healthy_history_raises_nothing():
    h = history()
    assert health_alarms(h, D) == {}
    assert health_alarms([], D) == {}


# ----------------------------------------------------------------------------- dead_class

def test_dead_class_fires_after_the_first_epoch():
    h = history(rows={3: {"counts": (90, 8, 2)}, 5: {"counts": (95, 5, 0)}})
    text = dead_class(h, 3)
    assert text == "fewer than 3 validation predictions: severe (epochs 4, 6)"


def test_dead_class_at_threshold_and_first_epoch_are_silent():
    assert dead_class(history(rows={3: {"counts": (94, 3, 3)}}), 3) is None  # 3 is not fewer than 3
    assert dead_class(history(rows={0: {"counts": (100, 0, 0)}}), 3) is None  # epoch 1 is skipped


# ----------------------------------------------------------------------------- majority_ceiling

def test_majority_ceiling_fires_at_the_best_ba_epoch():
    h = history([0.6, 0.7, 0.65], rows={1: {"normal": 0.95, "severe": 0.3}})
    text = majority_ceiling(h, 0.90, 0.50)
    assert text.startswith("at the best-BA epoch 2 (BA 0.700)")
    assert "severe 0.300 < 0.5" in text and "moderate" not in text
    # a BA tie keeps the first epoch, as CheckpointSelector's strict > does
    tie = history([0.6, 0.7, 0.7], rows={1: {"normal": 0.95, "severe": 0.3}})
    assert majority_ceiling(tie, 0.90, 0.50).startswith("at the best-BA epoch 2 ")


def test_majority_ceiling_ignores_other_epochs():
    # the ceiling at the final epoch, which is not the best-BA one, is not what the run reports
    h = history([0.6, 0.7, 0.65], rows={2: {"normal": 0.95, "severe": 0.3}})
    assert majority_ceiling(h, 0.90, 0.50) is None


@pytest.mark.parametrize("normal,moderate", [(0.90, 0.2), (0.99, 0.50)])
def test_majority_ceiling_at_threshold_is_silent(normal, moderate):
    h = history([0.6, 0.7], rows={1: {"normal": normal, "moderate": moderate}})
    assert majority_ceiling(h, 0.90, 0.50) is None


# ----------------------------------------------------------------------------- peak_then_decline

def test_peak_then_decline_fires():
    h = history([0.6, 0.7, 0.66, 0.64, 0.62, 0.62, 0.61, 0.6, 0.6])
    assert peak_then_decline(h, 0.03, 1 / 3) == ("best BA 0.700 at epoch 2 of 9 (in the first 33% of the run), "
                                                 "final BA 0.600: down 0.100 > 0.03")


def test_peak_then_decline_at_thresholds_is_silent():
    # a drop of exactly 0.03 (0.73 - 0.70 is 0.030000000000000027 in floats)
    assert peak_then_decline(history([0.6, 0.73, 0.72, 0.71, 0.70, 0.70]), 0.03, 1 / 3) is None
    # the peak at index 3 of 9 is not in the first third (3 < 9/3 fails); index 2 is
    late, early = [0.6] * 9, [0.6] * 9
    late[3] = early[2] = 0.7
    assert peak_then_decline(history(late), 0.03, 1 / 3) is None
    assert peak_then_decline(history(early), 0.03, 1 / 3) is not None


def test_peak_drop_override_silences_peak_then_decline():
    h = history([0.6, 0.7, 0.66, 0.64, 0.62, 0.62, 0.61, 0.6, 0.6])
    assert "peak_then_decline" in health_alarms(h, Config().alarms)
    cfg = apply_overrides(Config(), {"alarms.peak_drop": 0.2})
    assert cfg.alarms.peak_drop == 0.2
    assert "peak_then_decline" not in health_alarms(h, cfg.alarms)


# ----------------------------------------------------------------------------- instability

def test_instability_fires_on_the_last_window():
    h = history([0.5, 0.6, 0.65, 0.6, 0.62, 0.6, 0.64])
    assert instability(h, 5, 0.03) == "BA spread 0.050 > 0.03 over the last 5 epochs (0.600-0.650)"


def test_instability_at_threshold_short_runs_and_old_epochs_are_silent():
    assert instability(history([0.6, 0.63, 0.6, 0.63, 0.6]), 5, 0.03) is None  # spread exactly 0.03
    assert instability(history([0.3, 0.7, 0.3, 0.7]), 5, 0.03) is None  # fewer than 5 epochs
    assert instability(history([0.3, 0.7, 0.6, 0.61, 0.6, 0.61, 0.6]), 5, 0.03) is None  # swing before the window


# ----------------------------------------------------------------------------- overfitting

def gaps(values, train=0.5):
    return history(n=len(values), rows={i: {"train": train, "val": train + g} for i, g in enumerate(values)})


def test_overfitting_fires_on_a_growing_gap():
    text = overfitting(gaps([0.1, 0.2, 0.3, 0.4, 0.5]), 0.1)
    assert text == "val - train loss gap grew 0.100 -> 0.500 (+0.400 > 0.1), slope +0.1000/epoch"


def test_overfitting_needs_both_slope_and_growth():
    assert overfitting(gaps([0.2, 0.25, 0.3]), 0.1) is None  # rising, but by exactly 0.1
    falling = [0.0, 1.0, 0.0, 0.0, 0.2]  # last > first + 0.1, but the trend is down
    assert linregress(range(5), falling).slope < 0
    assert overfitting(gaps(falling), 0.1) is None
    assert overfitting(gaps([0.0, 0.5]), 0.1) is None  # fewer than 3 epochs
    assert overfitting(gaps([0.1, 0.2, 0.3, 0.4, 0.5]), 0.5) is None  # larger threshold


# ----------------------------------------------------------------------------- wiring

def test_health_alarms_reports_each_alarm_in_order():
    bas = [0.6, 0.8, 0.7, 0.75, 0.7, 0.62]
    h = history(bas, rows={1: {"normal": 0.95, "severe": 0.1}, 4: {"counts": (99, 1, 0)}})
    for i, row in enumerate(h):
        row["val/loss"] = 0.6 + 0.1 * i
    assert list(health_alarms(h, D)) == ["dead_class", "majority_ceiling", "peak_then_decline", "instability",
                                         "overfitting"]


def test_alarm_tags():
    alarms = {"instability": "BA spread 0.050", "overfitting": "gap grew"}
    assert alarm_tags(alarms) == {"harness.alarm.instability": "BA spread 0.050",
                                  "harness.alarm.overfitting": "gap grew",
                                  "harness.alarms": "instability,overfitting"}
    assert alarm_tags({}) == {"harness.alarms": "none"}


def test_alarm_config_section():
    flat = Config().flat()
    assert flat["alarms.dead_class_min"] == 3 and flat["alarms.overfit_gap_growth"] == 0.1
    cfg = apply_overrides(Config(), {"alarms.instability_window": 3, "alarms.peak_fraction": 1})
    assert cfg.alarms.instability_window == 3 and cfg.alarms.peak_fraction == 1.0
    with pytest.raises(UsageError, match="alarms.peak_fraction"):
        AlarmConfig(peak_fraction=0)
    with pytest.raises(UsageError, match="alarms.ceiling_normal_recall"):
        apply_overrides(Config(), {"alarms.ceiling_normal_recall": 1.5})
    with pytest.raises(UsageError, match="unknown config key"):
        apply_overrides(Config(), {"alarms.nope": 1})


def test_trend_alarms_need_enough_epochs():
    """A 2-epoch run has no 'first third' and no trend: peak_then_decline, instability and
    overfitting stay silent below alarms.min_epochs, and fire on the same shape once it is long enough."""
    cfg = Config().alarms
    short = history([0.70, 0.60])
    assert peak_then_decline(short, 0.03, 1 / 3) is not None  # the bare rule would fire on it
    assert "peak_then_decline" not in health_alarms(short, cfg)
    longer = history([0.70, 0.60, 0.60, 0.60, 0.60])
    assert len(longer) == cfg.min_epochs and "peak_then_decline" in health_alarms(longer, cfg)
    assert peak_then_decline(history([0.7, 0.6, 0.6, 0.6]), 0.03, 1 / 3, min_epochs=5) is None
    assert overfitting(gaps([0.1, 0.3, 0.5, 0.7]), 0.1) is not None
    assert overfitting(gaps([0.1, 0.3, 0.5, 0.7]), 0.1, min_epochs=5) is None
    assert instability(history([0.3, 0.7, 0.3]), 2, 0.03, min_epochs=5) is None

