"""Dotted-key overrides of a Config: `--set key=value`, a `--config` YAML file, a profile, a tuning
trial. Precedence (README "Running", Config): variant defaults, then --profile, then --config
FILE.yaml, then --set key=value. Every layer goes through `apply_overrides`, so unknown keys and
wrong types are refused the same way wherever they come from.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

from harness.core.config import Config, flatten
from harness.core.errors import UsageError, did_you_mean


def valid_keys(cfg: Config | None = None) -> list[str]:
    return sorted((cfg or Config()).flat())


def parse_set(items: list[str]) -> dict[str, Any]:
    """['train.epochs=3', 'loss.class_weights=[1,2,4]'] -> {key: YAML-typed value}."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UsageError(f"--set {key.strip()}: cannot parse value {raw!r}") from None
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file: nested mappings or dotted keys, flattened to dotted keys."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, Mapping):
        raise UsageError(f"--config {path}: expected a mapping of config keys")
    return dict(flatten(data))


def apply_overrides(cfg: Config, overrides: Mapping[str, Any], source: str = "--set") -> Config:
    """Return a new Config with dotted-key overrides applied, each checked against its field type."""
    flat = cfg.flat()
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in flat or isinstance(flat[key], Mapping):
            raise UsageError(f"{source}: unknown config key {key!r}{did_you_mean(key, flat, cutoff=0.5)}")
        section, _, name = key.rpartition(".")
        owner = getattr(cfg, section) if section else cfg
        value = _coerce(key, value, _field_type(type(owner), name), source)
        (sections.setdefault(section, {}) if section else top)[name] = value
    for section, values in sections.items():
        top[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **top)


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _field_type(cls: type, name: str):
    return _type_hints(cls)[name]


@functools.cache
def _type_hints(cls: type) -> dict:
    # evaluating the string annotations is most of an override's cost: once per section class
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, tp: Any, source: str) -> Any:
    """Check value against a field annotation; int->float and list->tuple are the only conversions."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, option, source)
            except UsageError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{source}: {key} expects a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(key, v, item_type, source) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value):
        return float(value)  # PyYAML reads 3e-4 (no dot) as a string; users write it that way
    if tp is Any or (isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    name = getattr(tp, "__name__", str(tp))
    raise UsageError(f"{source}: {key} expects {name}, got {value!r}")
