"""The slice-sequence classifier and the trunk pieces its variants share: backbone per slice ->
[projection] -> [RNN] -> pooling over slices -> level conditioning -> head(s). Each variant assembles
its own in its file (variants/v4.py, v5, v6, v8, v9; v10 is v4's); v7's 2.5D model is stack_model.py."""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn

from harness.core.config import ModelConfig
from harness.models.backbone import create_backbone
from harness.models.blocks import ClassifierHead, FeatureProjection, SequenceRNN

NUM_CLASSES = 3
NUM_LEVELS = 5
ROLES = ("backbone", "proj", "sequence", "pool", "level", "head")


class SliceSequenceModel(nn.Module):
    """images (B,S,C,H,W), level (B,) -> {'logits': (B,3), the head's other outputs, the pool's weights}."""

    backbone_groups = ("backbone",)  # the groups trained at the backbone LR/weight decay and frozen by freezing

    def __init__(self, backbone: nn.Module, proj: nn.Module | None, sequence: nn.Module | None,
                 pool: nn.Module, level: nn.Module, head: nn.Module, names: Mapping[str, str] | None = None):
        super().__init__()
        # Child names (a HeadSet's part names for its heads) are the checkpoint keys and the optimiser/MLflow
        # group names (lr/<name>), so each variant keeps its notebook's names; roles say what forward does.
        names = {role: role for role in ROLES} | dict(names or {})
        self._roles: dict[str, str | None] = {}
        for role, module in zip(ROLES, (backbone, proj, sequence, pool, level, head)):
            self._roles[role] = names[role] if module is not None else None
            if module is not None:
                self.add_module(names[role], module)

    def _part(self, role: str) -> nn.Module | None:
        name = self._roles[role]
        return None if name is None else getattr(self, name)

    def forward(self, images: torch.Tensor, level: torch.Tensor) -> dict[str, torch.Tensor]:
        b, s = images.shape[:2]
        # All B*S slices go through the shared backbone as one batch, as the notebooks did.
        x = self._part("backbone")(images.flatten(0, 1)).reshape(b, s, -1)
        for role in ("proj", "sequence"):
            if (part := self._part(role)) is not None:
                x = part(x)
        pooled, slice_outputs = self._part("pool")(x)
        head_out = self._part("head")(self._part("level")(pooled, level))
        # a single classifier returns the logits; a HeadSet returns them with its other outputs
        outputs = head_out if isinstance(head_out, dict) else {"logits": head_out}
        return outputs | slice_outputs

    def param_groups(self) -> OrderedDict[str, list[nn.Parameter]]:
        """Group name -> parameters, in construction order: one per child, or a HeadSet's own groups."""
        groups: OrderedDict[str, list[nn.Parameter]] = OrderedDict()
        for name, child in self.named_children():
            if hasattr(child, "param_groups"):
                groups.update(child.param_groups())
            else:
                groups[name] = list(child.parameters())
        return groups


def recurrent_trunk(m: ModelConfig, rnn: str, mlp_proj: bool) -> tuple[dict[str, nn.Module], int]:
    """Backbone -> projection (v4/v5/v6 MLP, v9 plain Linear) -> bidirectional RNN; parts and RNN output width."""
    backbone = create_backbone(m)
    proj = (FeatureProjection(backbone.num_features, m.proj_dim, m.dropout) if mlp_proj
            else nn.Linear(backbone.num_features, m.proj_dim))
    sequence = SequenceRNN(rnn, m.proj_dim, m.seq_hidden, m.seq_layers, m.seq_dropout)
    return dict(backbone=backbone, proj=proj, sequence=sequence), 2 * m.seq_hidden


def classifier_head(m: ModelConfig, in_dim: int) -> ClassifierHead:
    """The 3-class MLP head of v5, v7, v8, v9 (with the prior bias when model.head_bias is set)."""
    return ClassifierHead(in_dim, m.head_hidden, NUM_CLASSES, m.dropout, m.head_dropout, bias=m.head_bias)
