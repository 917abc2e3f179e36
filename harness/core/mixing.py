"""Runs that mix two variants: `harness run v4 --take v9:loss,sampling` trains v4 with v9's loss and
sampling factors (harness.core.factors). The mix is a variant of its own, named `v4+v9:loss,sampling`
(factors in their declared order), so everything that looks a variant up (matrices, resume, compare,
the run's tags) works on it unchanged.

Its config is the base's defaults with every key of the taken factors set to the donor's value, checked
like any other config; taking the model factor also takes the donor's builder, prediction rule and outputs.
A mix that cannot work is refused in one line that says why and what to take with it: a loss that reads a
head the model lacks (v6's CORAL loss needs an 'ordinal' output), or a prediction rule that reads a head
the loss never trains (v6's model predicts from its ordinal head, which a plain CE leaves untrained).
"""
from __future__ import annotations

import re

from harness.core.config import Config
from harness.core.errors import UsageError
from harness.core.factors import BY_NAME, differences, parse_factors
from harness.core.overrides import apply_overrides
from harness.core.variant import Variant, reference

MIX_NAME = re.compile(r"(?P<base>[^+:,\s]+)\+(?P<donor>[^+:,\s]+):(?P<factors>[\w,]+)")

# what each loss (harness.losses.LOSSES) reads from the model's outputs; tests/test_mixing.py runs each loss
# on exactly these to hold the table to the code
LOSS_NEEDS = {"weighted_ce": ("logits",), "focal": ("logits",), "coral_ce": ("logits", "ordinal"),
              "focal_ordinal": ("logits", "ordinal")}
AUX_OUTPUTS = ("binary", "severity")  # trained by focal with aux_weight > 0 when the model has them
# what each prediction rule (harness.models.predictions) reads; a rule not listed here is not checked
PREDICTION_READS = {"harness.models.predictions:softmax_logits": ("logits",),
                    "harness.models.predictions:coral_probs": ("ordinal",),
                    "harness.models.predictions:ce_ordinal_mix": ("logits", "ordinal")}


class MixError(UsageError):
    """A mix that cannot train: `coupled` names the factors that only go together, `needs` those of them the
    mix would have to take as well."""

    def __init__(self, message: str, needs: tuple[str, ...] = (), coupled: tuple[str, ...] = ("loss", "model")):
        super().__init__(message)
        self.needs, self.coupled = needs, coupled


def mix_name(base: str, donor: str, factors: tuple[str, ...]) -> str:
    return f"{base}+{donor}:{','.join(factors)}"


def parse_take(text: str) -> tuple[str, tuple[str, ...]]:
    """`--take v9:loss,sampling` -> ('v9', ('loss', 'sampling'))."""
    donor, sep, names = text.partition(":")
    if not sep or not donor.strip():
        raise UsageError(f"--take {text}: expected VARIANT:FACTOR[,FACTOR...], e.g. --take v9:loss,sampling")
    return donor.strip(), parse_factors(names, f"--take {text}")


def trained_outputs(cfg: Config, outputs: tuple[str, ...]) -> set[str]:
    """The model outputs the config's loss trains."""
    trained = set(LOSS_NEEDS.get(cfg.loss.name, ("logits",)))
    if cfg.loss.name == "focal" and cfg.loss.aux_weight > 0:
        trained |= set(AUX_OUTPUTS) & set(outputs)
    return trained


def mix(base: Variant, donor: Variant, factors: tuple[str, ...]) -> Variant:
    """`base` with `donor`'s factors, checked; MixError says why a mix cannot train."""
    name = mix_name(base.name, donor.name, factors)
    if base.parts or donor.parts:
        raise UsageError(f"{name}: mix registered variants, not mixes (take the factors from the two variants)")
    if base.name == donor.name:
        raise UsageError(f"{name}: a variant takes factors from another variant, not from itself")
    changed, _ = differences(base, donor)
    same = [f for f in factors if f not in changed]
    if same:
        raise UsageError(f"{name}: {base.name} and {donor.name} have the same {', '.join(same)} (nothing to take); "
                         f"they differ in {', '.join(changed) or 'nothing'}")
    donor_flat = donor.defaults().flat()
    keys = {key: donor_flat[key] for f in factors for key in BY_NAME[f].keys}
    try:
        cfg = apply_overrides(base.defaults(), keys | {"variant": name}, f"{base.name} with {donor.name}'s "
                              f"{', '.join(factors)}")
    except UsageError as exc:
        raise UsageError(f"{name}: {exc}") from None
    model = donor if "model" in factors else base
    check_heads(name, cfg, model, factors)
    return Variant(name=name, description=f"{base.name} with {donor.name}'s {', '.join(factors)}",
                   defaults=lambda: cfg, model_builder=model.model_builder, prediction=model.prediction,
                   outputs=model.outputs, parts={"base": base.name, "donor": donor.name, "factors": factors})


def check_heads(name: str, cfg: Config, model: Variant, factors: tuple[str, ...]) -> None:
    """The loss reads only outputs the model has, and the prediction rule only outputs the loss trains."""
    needs = tuple(f for f in ("loss", "model") if f not in factors)
    missing = [o for o in LOSS_NEEDS.get(cfg.loss.name, ("logits",)) if o not in model.outputs]
    if missing:
        raise MixError(f"{name}: loss {cfg.loss.name} needs the model output {missing[0]!r}, which {model.name}'s "
                       f"model does not have; loss and model go together here (take {' and '.join(needs)} too)",
                       needs)
    reads = PREDICTION_READS.get(reference(model.prediction), ())
    untrained = [o for o in reads if o not in trained_outputs(cfg, model.outputs)]
    if untrained:
        rule = reference(model.prediction).rpartition(":")[2]
        raise MixError(f"{name}: {model.name}'s prediction rule {rule} reads the {untrained[0]!r} head, which loss "
                       f"{cfg.loss.name} does not train; loss and model go together here (take "
                       f"{' and '.join(needs)} too)", needs)
