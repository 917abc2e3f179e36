"""Slice-sequence classifier: shared backbone per slice -> projection -> RNN -> pooling -> level -> head."""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn

from harness.config import ModelConfig
from harness.models.backbone import create_backbone
from harness.models.blocks import AttentionPool, ClassifierHead, LevelConcat, SequenceRNN

NUM_CLASSES = 3
NUM_LEVELS = 5
ROLES = ("backbone", "proj", "sequence", "pool", "level", "head")


class SliceSequenceModel(nn.Module):
    """images (B,S,C,H,W), level (B,) -> {'logits': (B,3), 'attention': (B,S)}."""

    def __init__(self, backbone: nn.Module, proj: nn.Module | None, sequence: nn.Module | None,
                 pool: nn.Module, level: nn.Module, head: nn.Module, names: Mapping[str, str] | None = None):
        super().__init__()
        # Child names are the checkpoint keys and the optimiser/MLflow group names (lr/<name>),
        # so each variant can keep its notebook's names; roles say what forward does with them.
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
        pooled, attention = self._part("pool")(x)
        logits = self._part("head")(self._part("level")(pooled, level))
        return {"logits": logits, "attention": attention}

    def param_groups(self) -> OrderedDict[str, list[nn.Parameter]]:
        """Top-level child name -> its parameters, in construction order (one optimiser group each)."""
        return OrderedDict((name, list(child.parameters())) for name, child in self.named_children())


def build_v9(cfg: ModelConfig) -> SliceSequenceModel:
    """SpineModelV9 (VARIANTS.md §9.4): Linear proj, BiGRU, attention-MIL pool, level concat, MLP head."""
    backbone = create_backbone(cfg)
    rnn_out = 2 * cfg.seq_hidden
    return SliceSequenceModel(
        backbone=backbone,
        proj=nn.Linear(backbone.num_features, cfg.proj_dim),
        sequence=SequenceRNN("gru", cfg.proj_dim, cfg.seq_hidden, cfg.seq_layers, cfg.seq_dropout),
        pool=AttentionPool(rnn_out, cfg.attn_hidden),
        level=LevelConcat(NUM_LEVELS, cfg.level_dim),
        head=ClassifierHead(rnn_out + cfg.level_dim, cfg.head_hidden, NUM_CLASSES, cfg.dropout,
                            cfg.head_dropout, bias=cfg.head_bias),
        names=dict(proj="feature_proj", sequence="gru", pool="attention", level="level_embed",
                   head="classifier"),
    )
