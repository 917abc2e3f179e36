"""A validated study spec (StudySpec, its search space of ParamSpecs) and what the tuning engine does
with one (README "Tuning (Optuna)"): Optuna suggestions, config overrides, trial 0's parameters,
sampler, pruner and the `harness run` command that reproduces a trial.

Every search-space key is a dotted config key, or one entry of a tuple key written `key[i]`
(`loss.class_weights[1]`); the spec key is also the Optuna parameter name.

Reading and checking a spec file is `harness.tuning.spec`, which builds these dataclasses; this module
does not import it.
"""
from __future__ import annotations

import re
import shlex
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import optuna
import yaml

from harness.core.config import Config
from harness.core.errors import UsageError
from harness.core.overrides import apply_overrides
from harness.core.registry import get_variant
from harness.core.run_config import build_config

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "cmaes": optuna.samplers.CmaEsSampler}
PRUNERS = {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
           "hyperband": optuna.pruners.HyperbandPruner,
           "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
           "threshold": optuna.pruners.ThresholdPruner, "none": optuna.pruners.NopPruner}
_INDEXED = re.compile(r"(?P<key>[^\[\]]+)\[(?P<index>\d+)\]")


@dataclass(frozen=True)
class ParamSpec:
    """One search-space entry."""

    key: str
    """The spec key and Optuna parameter name: a dotted config key, or `key[i]` for a tuple entry."""
    config_key: str
    """The dotted config key it sets."""
    index: int | None
    """Entry of the tuple at config_key, or None when the whole value is searched."""
    type: str
    """'float', 'int' or 'categorical'."""
    low: float | int | None = None
    """Lower bound, inclusive (float/int)."""
    high: float | int | None = None
    """Upper bound, inclusive (float/int)."""
    log: bool = False
    """Sample on a log scale (float/int)."""
    step: float | int | None = None
    """Discretisation step (float/int); None: continuous float, 1 for int."""
    choices: tuple = ()
    """Candidate values (categorical)."""


@dataclass(frozen=True)
class StudySpec:
    """A validated study spec."""

    source: str
    """Where the spec came from (its file path); every error names it."""
    name: str
    """Study name, also the MLflow parent run name."""
    variant: str
    """Registered variant every trial runs."""
    folds: tuple[int, ...]
    """Validation folds of every trial, trained in this order (one fold: the spec's `fold`)."""
    metric: str
    """Objective: a metric as `harness run` logs it (best/balanced_accuracy)."""
    direction: str
    """'maximize' or 'minimize'."""
    trials: int
    """Number of trials of the study."""
    timeout: float | None
    """Stop starting trials after this many seconds; None: no limit."""
    sampler: str
    """Optuna sampler: a key of SAMPLERS."""
    sampler_kwargs: Mapping[str, Any]
    """Keyword arguments of the sampler (seed, n_startup_trials, ...)."""
    pruner: str
    """Optuna pruner: a key of PRUNERS ('none': never prune)."""
    pruner_kwargs: Mapping[str, Any]
    """Keyword arguments of the pruner."""
    fixed: Mapping[str, Any]
    """Dotted overrides applied to every trial (`key[i]` entries resolved to whole tuples, lists as tuples)."""
    space: tuple[ParamSpec, ...]
    """Search space, in spec order (the order of Optuna's suggestions)."""

    @property
    def fold(self) -> int:
        """The first fold (the only one of a one-fold study): the fold a config is built with."""
        return self.folds[0]


# ----------------------------------------------------------------------------- keys and overrides

def split_key(key: str, where: str) -> tuple[str, int | None]:
    """A spec key -> (dotted config key, tuple index or None); `where` prefixes the error."""
    match = _INDEXED.fullmatch(key)
    if match is None:
        if "[" in key or "]" in key:
            raise UsageError(f"{where}: {key!r}: write a tuple entry as key[index], e.g. loss.class_weights[1]")
        return key, None
    return match["key"], int(match["index"])


def apply_at(cfg: Config, overrides: Mapping[str, Any], where: str) -> Config:
    """apply_overrides, with `where` on every error (a dataclass's own checks do not name a source)."""
    try:
        return apply_overrides(cfg, overrides, where)
    except UsageError as exc:
        msg = str(exc)
        raise UsageError(msg if msg.startswith(where) else f"{where}: {msg}") from None


# ----------------------------------------------------------------------------- what the engine calls

def suggest(trial: optuna.trial.BaseTrial, spec: StudySpec) -> dict[str, Any]:
    """Ask the trial for every space entry; parameter names are the spec keys."""
    out = {}
    for p in spec.space:
        if p.type == "float":
            out[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
        elif p.type == "int":
            out[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            out[p.key] = trial.suggest_categorical(p.key, list(p.choices))
    return out


def to_overrides(params: Mapping[str, Any], base: Config, source: str = "tune") -> dict[str, Any]:
    """Suggestions -> dotted overrides; `key[i]` entries become the whole tuple, the rest from `base`."""
    flat = base.flat()
    out: dict[str, Any] = {}
    for key, value in params.items():
        config_key, index = split_key(key, source)
        if index is None:
            out[config_key] = value
            continue
        current = out.get(config_key, flat.get(config_key))
        if config_key not in flat:
            apply_at(base, {config_key: None}, source)  # raises: unknown key, nearest valid named
        if not isinstance(current, (tuple, list)):
            raise UsageError(f"{source}: {key}: {config_key} is not a list-valued key (it is {current!r})")
        if index >= len(current):
            raise UsageError(f"{source}: {key}: index {index} is out of range; {config_key} has "
                             f"{len(current)} entries (0-{len(current) - 1})")
        out[config_key] = tuple(value if i == index else v for i, v in enumerate(current))
    return out


def default_params(spec: StudySpec, base: Config) -> dict[str, Any]:
    """Trial 0's parameters: each space key's value in `base` with the fixed overrides applied."""
    values = apply_at(base, spec.fixed, f"{spec.source}: fixed").flat()
    out = {}
    for p in spec.space:
        value = values[p.config_key] if p.index is None else values[p.config_key][p.index]
        at = f"{spec.source}: space {p.key}"
        if p.type == "categorical":
            if value not in p.choices:
                raise UsageError(f"{at}: the default {value!r} is not among the choices {list(p.choices)}; "
                                 "trial 0 runs the defaults, so add it (or change it under fixed)")
        elif value is None or isinstance(value, bool) or not p.low <= value <= p.high:
            raise UsageError(f"{at}: the default {value!r} is outside [{p.low}, {p.high}]; trial 0 runs the "
                             "defaults, so widen the range (or change the default under fixed)")
        elif p.type == "int" and value != int(value) or p.step and not _on_grid(value, p.low, p.step):
            raise UsageError(f"{at}: the default {value!r} is not on the grid low={p.low}, step={p.step or 1}")
        out[p.key] = int(value) if p.type == "int" else float(value) if p.type == "float" else value
    return out


def _on_grid(value: float, low: float, step: float) -> bool:
    steps = (value - low) / step
    return abs(steps - round(steps)) < 1e-9  # tolerance: 0.3 is 2.0000000000000004 steps of 0.1 from 0.1


def build_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The spec's Optuna sampler."""
    return _construct(SAMPLERS[spec.sampler], spec.sampler_kwargs, f"{spec.source}: sampler {spec.sampler}")


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's Optuna pruner (NopPruner for 'none')."""
    return _construct(PRUNERS[spec.pruner], spec.pruner_kwargs, f"{spec.source}: pruner {spec.pruner}")


def _construct(cls: type, kwargs: Mapping[str, Any], where: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{where}: {str(exc).splitlines()[0]}") from None


def reproduce_command(spec: StudySpec, params: Mapping[str, Any], profile: str, data_dir: str | None = None,
                      sets: Mapping[str, Any] | None = None) -> str:
    """The `harness run` command line that trains the trial with these parameters again (on every fold
    of the study: `--fold 0,1,2` is a matrix of runs); `sets` are extra overrides the study ran with
    (the tune command's --set), applied after `fixed`."""
    given = {**spec.fixed, **(sets or {})}
    base = build_config(get_variant(spec.variant), spec.fold, profile, None, given, data_dir)
    overrides = {**given, **to_overrides(params, base, spec.source)}
    folds = ",".join(map(str, spec.folds))  # several folds: `harness run` trains them as a matrix
    words = ["harness", "run", spec.variant, "--fold", folds, "--profile", profile]
    if data_dir:
        words += ["--data-dir", data_dir]
    for key, value in overrides.items():
        words += ["--set", f"{key}={_yaml_value(value)}"]
    return " ".join(shlex.quote(w) for w in words)


def _yaml_value(value: Any) -> str:
    """A value as `--set` parses it back (YAML flow; floats keep a dot so PyYAML reads them as floats)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_flow_item(v) for v in value) + "]"
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 30).removesuffix("\n...\n").strip()


def _flow_item(value: Any) -> str:
    # dumped inside a one-item list, so a string holding ',' or ']' is quoted as a flow list needs
    return yaml.safe_dump([value], default_flow_style=True, width=1 << 30).strip()[1:-1]
