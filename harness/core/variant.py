"""What a variant is: its faithful defaults, its model builder, its prediction rule, the outputs its model
returns; and, for a mix of two variants (`harness run A --take B:loss`), which parts came from where.
The registry (harness.core.registry) fills and looks them up."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from harness.core.config import Config

if TYPE_CHECKING:
    import torch

DEFAULT_PREDICTION = "harness.models.predictions:softmax_logits"


@dataclass(frozen=True)
class Variant:
    """One notebook version: its faithful defaults, its model, and only the hooks where it differs."""

    name: str
    description: str
    defaults: Callable[[], Config]
    """The variant's config as its notebook ran (docs/variants.md)."""
    model_builder: Callable[[Config], "torch.nn.Module"] | str
    """Config -> module whose forward(image, level) returns a dict with at least 'logits'; or its
    'module:function' path."""
    prediction: Callable[[dict[str, "torch.Tensor"]], "torch.Tensor"] | str = DEFAULT_PREDICTION
    """Model outputs -> class probabilities (B, 3) (harness.models.predictions), or its path; softmax by default."""
    outputs: tuple[str, ...] = ("logits",)
    """The names in the model's output dict (tests/test_mixing.py checks them against the built model)."""
    parts: dict[str, Any] | None = None
    """A mix only: {"base": A, "donor": B, "factors": (names taken from B)}."""

    def build_model(self, cfg: Config) -> "torch.nn.Module":
        return resolve(self.model_builder)(cfg)

    @property
    def predict(self) -> Callable[[dict[str, "torch.Tensor"]], "torch.Tensor"]:
        return resolve(self.prediction)


def resolve(ref: Callable | str) -> Any:
    """A callable, or the object a 'module:attribute' string names (imported now)."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def reference(ref: Callable | str) -> str:
    """'module:function' for a callable or a path: how two variants' builders are told apart."""
    return ref if isinstance(ref, str) else f"{ref.__module__}:{ref.__qualname__}"
