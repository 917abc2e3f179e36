"""Reading and checking a study spec for `harness tune` (README "Tuning (Optuna)"): the YAML file ->
a validated `StudySpec`. The dataclasses, and what the engine does with a validated spec (suggestions,
overrides, trial 0's parameters, sampler, pruner, the reproduce command), are `harness.tuning.space`.

Two stages, because some config checks depend on the profile (smoke scales train.warmup_epochs, so
`fixed: {train.epochs: 1}` is valid under smoke and not under full):
- `load_spec` checks what holds for any profile: the spec's shape, config keys (through
  `apply_overrides`, so the nearest valid key is named as for `--set`), value types, tuple indices;
- `check_spec(spec, base)` checks the rest against the config the study runs from (variant defaults,
  profile, --set): every bound and choice passes the config's own checks, trial 0's defaults lie
  inside the space. The engine calls it before the first trial.

Folds: `fold: N` (default 0) tunes on one fold, exactly as before `folds` existed; `folds: [0, 1, 2]`
or `folds: all` (every fold of data.num_folds) tunes on several, the objective being the mean over
them (`folds: [N]` is `fold: N`). Giving both keys is refused. With several folds a pruning step is a
fold, not an epoch (harness.tuning.objective says why), so a median/percentile/threshold pruner's
n_warmup_steps must leave a fold to prune at: at most the number of folds - 2.
"""
from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any, Mapping

import yaml

from harness.core.config import Config, flatten
from harness.core.errors import UsageError, did_you_mean
from harness.core.names import OBJECTIVES
from harness.core.overrides import _YAML11_FLOAT, apply_overrides
from harness.core.registry import get_variant
from harness.tuning.space import (
    PRUNERS,
    SAMPLERS,
    ParamSpec,
    StudySpec,
    apply_at,
    build_pruner,
    build_sampler,
    default_params,
    split_key,
    to_overrides,
)

TOP_KEYS = ("name", "variant", "fold", "folds", "objective", "trials", "timeout", "sampler", "pruner", "fixed", "space")
OBJECTIVE_KEYS = ("metric", "direction")
DIRECTIONS = ("maximize", "minimize")
PARAM_KEYS = {"float": ("type", "low", "high", "log", "step"), "int": ("type", "low", "high", "log", "step"),
              "categorical": ("type", "choices")}
# Set by the spec's own fields or the command line; a `fixed`/`space` entry for them would contradict those.
RUN_KEYS = ("variant", "fold", "profile", "data_dir")
# Pruners whose n_warmup_steps counts steps; with several folds a step is a fold (harness.tuning.objective).
WARMUP_PRUNERS = ("median", "percentile", "threshold")


# ----------------------------------------------------------------------------- loading and validation

def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec file."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return spec_from_dict(data, str(path))


def spec_from_dict(d: Any, source: str) -> StudySpec:
    """Validate a parsed spec as far as holds for any profile; `source` (the file) prefixes every error."""
    if not isinstance(d, Mapping):
        raise UsageError(f"{source}: expected a mapping with {', '.join(TOP_KEYS)}")
    _refuse_unknown(d, TOP_KEYS, source, "key")
    for key in ("name", "variant"):
        if not isinstance(d.get(key), str) or not d[key].strip():
            raise UsageError(f"{source}: '{key}' is required (a non-empty string)")
    try:
        variant = get_variant(d["variant"])
    except UsageError as exc:
        raise UsageError(f"{source}: variant: {exc}") from None
    folds, fold_key = _fold_list(d, source), "folds" if "folds" in d else "fold"
    # folds None: `folds: all`, known once fixed is (it may set data.num_folds)
    defaults = apply_at(variant.defaults(), {"fold": folds[0] if folds else 0}, f"{source}: {fold_key}")

    metric, direction = _objective(d.get("objective", {}), source)
    trials = d.get("trials", 20)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise UsageError(f"{source}: trials must be an integer >= 1, got {trials!r}")
    timeout = d.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise UsageError(f"{source}: timeout must be a positive number of seconds or null, got {timeout!r}")
    sampler, sampler_kwargs = _component(d.get("sampler", {"name": "tpe"}), "sampler", SAMPLERS, source)
    pruner, pruner_kwargs = _component(d.get("pruner", {"name": "median"}), "pruner", PRUNERS, source)

    fixed = _fixed(d.get("fixed") or {}, defaults, source)
    if folds is None:
        folds = tuple(range(fixed.get("data.num_folds", defaults.data.num_folds)))
    for fold in folds:
        apply_at(defaults, {"fold": fold}, f"{source}: {fold_key}")
    space = _space(d.get("space"), fixed, defaults, source)
    _check_warmup(pruner, pruner_kwargs, folds, source)
    spec = StudySpec(source=source, name=d["name"], variant=d["variant"], folds=folds, metric=metric,
                     direction=direction, trials=trials, timeout=timeout, sampler=sampler,
                     sampler_kwargs=sampler_kwargs, pruner=pruner, pruner_kwargs=pruner_kwargs,
                     fixed=fixed, space=space)
    build_sampler(spec), build_pruner(spec)  # a bad keyword value fails now, not at the first trial
    return spec


def check_spec(spec: StudySpec, base: Config) -> dict[str, Any]:
    """The checks that depend on the run config (`base`: defaults, profile, --set); returns trial 0's
    parameters. One-line UsageError naming the file and key otherwise."""
    cfg = apply_at(base, spec.fixed, f"{spec.source}: fixed")
    for fold in spec.folds:  # e.g. --set data.num_folds=3 leaves fold 4 out
        apply_at(cfg, {"fold": fold}, f"{spec.source}: {'fold' if len(spec.folds) == 1 else 'folds'}")
    for p in spec.space:
        where = f"{spec.source}: space {p.key}"
        for value in p.choices or (p.low, p.high):  # the config's own checks see every bound and choice
            apply_at(cfg, to_overrides({p.key: value}, cfg, where), where)
    return default_params(spec, base)


def _fold_list(d: Mapping, source: str) -> tuple[int, ...] | None:
    """`fold: N` (one fold, as before `folds` existed) or `folds: [0, 1, 2]` / `folds: all` (None)."""
    if "fold" in d and "folds" in d:
        raise UsageError(f"{source}: fold and folds: give one (fold: 0 tunes on one fold; folds: [0, 1, 2] or "
                         "folds: all on several)")
    if "folds" not in d:
        fold = d.get("fold", 0)
        if isinstance(fold, bool) or not isinstance(fold, int):
            raise UsageError(f"{source}: fold expects an integer, got {fold!r}")
        return (fold,)
    folds = d["folds"]
    if folds == "all":
        return None
    if (not isinstance(folds, list) or not folds
            or any(isinstance(f, bool) or not isinstance(f, int) for f in folds)):
        raise UsageError(f"{source}: folds expects a non-empty list of fold indices or 'all', got {folds!r} "
                         "(one fold: fold: N)")
    if len(set(folds)) != len(folds):
        raise UsageError(f"{source}: folds names a fold twice: {folds}")
    return tuple(folds)


def _check_warmup(pruner: str, kwargs: Mapping[str, Any], folds: tuple[int, ...], source: str):
    """With several folds a pruning step is a fold and the last fold is never pruned, so a warm-up
    meant in epochs (n_warmup_steps: 3 of the one-fold studies) would silently never prune."""
    warmup = kwargs.get("n_warmup_steps", 0)
    if len(folds) > 1 and pruner in WARMUP_PRUNERS and isinstance(warmup, int) and warmup > len(folds) - 2:
        raise UsageError(f"{source}: pruner {pruner}: n_warmup_steps {warmup} never prunes a trial on "
                         f"{len(folds)} folds: with several folds a step is a fold (0 = after the first) and "
                         f"the last fold is never pruned; use 0-{len(folds) - 2}, or pruner: none")


def _refuse_unknown(d: Mapping, allowed, source: str, what: str):
    for key in d:
        if key not in allowed:
            hint = did_you_mean(key, allowed, cutoff=0.5)
            raise UsageError(f"{source}: unknown {what} {key!r}{hint}; valid: {', '.join(allowed)}")



def _check_keys_and_types(cfg: Config, overrides: Mapping[str, Any], where: str):
    """apply_overrides' key and type checks only: those errors carry `where`; the dataclasses' own
    checks (ranges, cross-field rules) may depend on the profile and are left to check_spec."""
    try:
        apply_overrides(cfg, overrides, where)
    except UsageError as exc:
        if str(exc).startswith(where):
            raise


def _objective(obj: Any, source: str) -> tuple[str, str]:
    if not isinstance(obj, Mapping):
        raise UsageError(f"{source}: objective expects a mapping with metric and direction, got {obj!r}")
    _refuse_unknown(obj, OBJECTIVE_KEYS, f"{source}: objective", "key")
    metric = obj.get("metric", "best/balanced_accuracy")
    direction = obj.get("direction", "maximize")
    if not isinstance(metric, str) or not metric.strip():
        raise UsageError(f"{source}: objective.metric must be a metric name, got {metric!r}")
    if metric not in OBJECTIVES:  # a typo would otherwise train a whole trial before every value is NaN
        near = difflib.get_close_matches(metric, OBJECTIVES, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else "e.g. best/balanced_accuracy or best/competition_score_spinal"
        raise UsageError(f"{source}: objective.metric {metric!r} is not a figure a run logs for its selected "
                         f"epoch ({hint})")
    if direction not in DIRECTIONS:
        raise UsageError(f"{source}: objective.direction must be maximize or minimize, got {direction!r}")
    return metric, direction


def _component(entry: Any, what: str, known: Mapping[str, type], source: str) -> tuple[str, dict]:
    """A sampler or pruner: {name: ..., **kwargs}, the kwargs checked against the class's signature."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise UsageError(f"{source}: {what} expects a mapping with a name ({', '.join(known)})")
    name, kwargs = entry["name"], {k: v for k, v in entry.items() if k != "name"}
    if name not in known:
        hint = did_you_mean(name, known)
        raise UsageError(f"{source}: {what}.name {name!r} is unknown{hint}; known: {', '.join(known)}")
    params = [p for p in inspect.signature(known[name]).parameters if p != "self"]
    _refuse_unknown(kwargs, params or ["(none)"], f"{source}: {what} {name}", "argument")
    return name, kwargs


def _fixed(fixed: Any, defaults: Config, source: str) -> dict[str, Any]:
    """Fixed overrides (nested or dotted; `key[i]` takes the other entries from the defaults) as dotted keys."""
    where = f"{source}: fixed"
    if not isinstance(fixed, Mapping):
        raise UsageError(f"{where}: expected a mapping of config keys")
    flat = dict(flatten(fixed))
    for key in flat:
        _refuse_run_key(split_key(key, where)[0], where)
    overrides = to_overrides(flat, defaults, where)
    _check_keys_and_types(defaults, overrides, where)
    return {key: tuple(v) if isinstance(v, list) else v for key, v in overrides.items()}


def _space(space: Any, fixed: Mapping[str, Any], defaults: Config, source: str) -> tuple[ParamSpec, ...]:
    if not isinstance(space, Mapping) or not space:
        raise UsageError(f"{source}: space is required: a mapping of config key -> {{type, low, high}} or "
                         "{type: categorical, choices}")
    params = tuple(_param(key, entry, defaults, f"{source}: space") for key, entry in space.items())
    for p in params:
        # an indexed entry may sit on a fixed tuple (its other entries come from there); a whole key may not
        if p.config_key in fixed and p.index is None:
            raise UsageError(f"{source}: {p.key} is both in fixed and in space")
    return params


def _param(key: Any, entry: Any, defaults: Config, where: str) -> ParamSpec:
    config_key, index = split_key(str(key), where)
    _refuse_run_key(config_key, where)
    at = f"{where} {key}"
    if not isinstance(entry, Mapping):
        raise UsageError(f"{at}: expected a mapping like {{type: float, low: 1.0, high: 2.0}}")
    kind = entry.get("type")
    if kind not in PARAM_KEYS:
        raise UsageError(f"{at}: type must be one of {', '.join(PARAM_KEYS)}, got {kind!r}")
    _refuse_unknown(entry, PARAM_KEYS[kind], at, f"{kind} field")
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UsageError(f"{at}: choices must be a non-empty list")
        for choice in choices:
            # Optuna stores categorical choices as JSON scalars; a list value cannot be one
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise UsageError(f"{at}: choice {choice!r} is not a scalar (null, bool, number or string)")
        if len(set(map(repr, choices))) != len(choices):
            raise UsageError(f"{at}: choices repeat a value: {choices}")
        param = ParamSpec(key=str(key), config_key=config_key, index=index, type=kind, choices=tuple(choices))
        candidates = list(choices)
    else:
        integer = kind == "int"
        low, high = (_number(entry.get(b), f"{at}: {b}", integer) for b in ("low", "high"))
        if not low < high:
            raise UsageError(f"{at}: low must be below high, got low={low}, high={high}")
        log = entry.get("log", False)
        if not isinstance(log, bool):
            raise UsageError(f"{at}: log must be true or false, got {log!r}")
        if log and low <= 0 or log and integer and low < 1:
            raise UsageError(f"{at}: log scale needs low > 0{' (>= 1 for int)' if integer else ''}, got {low}")
        step = entry.get("step")
        if step is not None:
            step = _number(step, f"{at}: step", integer)
            if step <= 0 or (log and not integer) or (log and step != 1):
                raise UsageError(f"{at}: step must be positive and cannot be combined with log, got {step}")
        param = ParamSpec(key=str(key), config_key=config_key, index=index, type=kind, low=low, high=high,
                          log=log, step=step)
        candidates = [low, high]
    for value in candidates:  # every bound and choice has the config field's type
        _check_keys_and_types(defaults, to_overrides({param.key: value}, defaults, where), where)
    return param



def _refuse_run_key(config_key: str, where: str):
    if config_key in RUN_KEYS:
        raise UsageError(f"{where}: {config_key} cannot be set here; it comes from the spec's own "
                         "'variant'/'fold'/'folds' or from the command line")


def _number(value: Any, where: str, integer: bool) -> float | int:
    if isinstance(value, bool) or value is None:
        raise UsageError(f"{where} expects {'an integer' if integer else 'a number'}, got {value!r}")
    if integer:
        if isinstance(value, int):
            return value
        raise UsageError(f"{where} expects an integer, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML reads 1e-5 (no dot) as a string
    raise UsageError(f"{where} expects a number, got {value!r}")
