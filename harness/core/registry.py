"""The variant registry: `@register_variant` on a small factory fills it on import (like timm's
model registry); packages outside this repo add variants through the `harness.variants` entry-point group.

Importing the registry and the bundled variants costs no torch: a variant's model builder imports
its blocks inside the function (or is named as a 'module:function' string), and a prediction rule
is such a string, imported on first use; so listing the variants and checking a command's arguments
take a fraction of a second. A variant is one file (docs/architecture.md "Where to add")."""
from __future__ import annotations

import importlib
import pkgutil
import re
from importlib.metadata import entry_points
from typing import Callable

from harness.core.config import Config
from harness.core.errors import UsageError, did_you_mean
from harness.core.factors import parse_factors
from harness.core.mixing import MIX_NAME, mix
from harness.core.overrides import apply_overrides
from harness.core.variant import DEFAULT_PREDICTION, Variant

ENTRY_POINT_GROUP = "harness.variants"


_REGISTRY: dict[str, Variant] = {}
_discovered = False


def register_variant(name: str, description: str, build_model: Callable | str,
                     predict: Callable | str = DEFAULT_PREDICTION, outputs: tuple[str, ...] = ("logits",)):
    """Decorator on a defaults factory: `@register_variant("v9", "...", build_model="pkg.mod:build")`.
    A callable works too; a 'module:function' string keeps torch out of the import. `outputs` names the keys
    of the model's output dict beyond 'logits' too (a mix checks its loss and prediction rule against them)."""
    if re.search(r"[+:,\s]", name):
        raise ValueError(f"variant name {name!r}: '+', ':', ',' and spaces are kept for mixes (v4+v9:loss)")

    def wrap(defaults: Callable[[], Config]):
        _REGISTRY[name] = Variant(name=name, description=description, defaults=defaults,
                                  model_builder=build_model, prediction=predict, outputs=tuple(outputs))
        return defaults
    return wrap


def _discover():
    """Import every module of the bundled `variants` package, then the entry-point plugins."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import variants
    for mod in pkgutil.iter_modules(variants.__path__):
        importlib.import_module(f"variants.{mod.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def list_variants() -> list[str]:
    """Registered names in natural order (v4 ... v10, then plugins)."""
    _discover()
    return sorted(_REGISTRY, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])


def summarise(name: str) -> dict:
    """Name, description, parameter count and per-group sizes of a variant's model as its notebook
    built it (random weights: nothing is loaded or downloaded)."""
    import torch

    variant = get_variant(name)
    cfg = apply_overrides(variant.defaults(), {"model.pretrained": False}, "summary")
    with torch.device("meta"):  # shapes without memory or initialisation: counting is all this needs
        model = variant.build_model(cfg)
    groups = {group: sum(p.numel() for p in params) for group, params in model.param_groups().items()}
    return {"name": name, "description": variant.description, "parameters": sum(groups.values()),
            "architecture": " -> ".join(groups), "groups": groups, "backbone": cfg.model.backbone,
            "module": variant.defaults.__module__}


_MIXES: dict[str, Variant] = {}


def get_variant(name: str) -> Variant:
    """A registered variant, or a mix `A+B:f1,f2` (harness.core.mixing), made and checked on first use."""
    _discover()
    mixed = MIX_NAME.fullmatch(name)
    if mixed and name not in _REGISTRY:
        if name not in _MIXES:
            factors = parse_factors(mixed["factors"], name)
            variant = mix(get_variant(mixed["base"]), get_variant(mixed["donor"]), factors)
            _MIXES[name] = _MIXES[variant.name] = variant
        return _MIXES[name]
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise UsageError(f"unknown variant {name!r}{did_you_mean(name, _REGISTRY)}; known: {known}")
    return _REGISTRY[name]
