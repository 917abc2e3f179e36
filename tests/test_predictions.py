"""Prediction rules on hand-computed values (docs/variants.md §4.7, §6.4, §7.4)."""
import math

import pytest
import torch
from torch.testing import assert_close

from harness.models.predictions import PREDICTIONS, ce_ordinal_mix, coral_probs, softmax_logits

LN3 = math.log(3)  # sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25


def test_softmax_of_the_logits():
    out = {"logits": torch.log(torch.tensor([[1.0, 2.0, 5.0]])).half()}
    probs = softmax_logits(out)
    assert probs.dtype == torch.float32
    assert_close(probs, torch.tensor([[0.125, 0.25, 0.625]]), atol=1e-3, rtol=0)


def test_coral_rule_by_hand_including_a_rank_inconsistent_row():
    ordinal = torch.tensor([[LN3, -LN3],   # s = (.75, .25): (.25, .5, .25)
                            [-LN3, LN3],   # s = (.25, .75): (.75, -.5, .75) -> P1 clamped -> (.5, 0, .5)
                            [0.0, -LN3]])  # s = (.5, .25): (.5, .25, .25)
    probs = coral_probs({"ordinal": ordinal})
    assert_close(probs, torch.tensor([[0.25, 0.5, 0.25], [0.5, 0.0, 0.5], [0.5, 0.25, 0.25]]))


@pytest.mark.parametrize("rule", sorted(PREDICTIONS))
def test_rows_are_probabilities_even_for_extreme_outputs(rule):
    g = torch.Generator().manual_seed(0)
    out = {"logits": torch.randn(64, 3, generator=g) * 30, "ordinal": torch.randn(64, 2, generator=g) * 30}
    probs = PREDICTIONS[rule](out)
    assert probs.shape == (64, 3) and (probs >= 0).all()
    assert torch.allclose(probs.sum(1), torch.ones(64), atol=1e-6)


def test_v7_mix_is_sixty_percent_softmax_forty_percent_ordinal():
    out = {"logits": torch.zeros(1, 3), "ordinal": torch.tensor([[LN3, -LN3]])}
    # 0.6 x (1/3, 1/3, 1/3) + 0.4 x (.25, .5, .25)
    assert_close(ce_ordinal_mix(out), torch.tensor([[0.3, 0.4, 0.3]]))
    assert_close(ce_ordinal_mix(out, ce_share=1.0), torch.full((1, 3), 1 / 3))
