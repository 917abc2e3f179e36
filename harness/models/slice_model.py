"""Slice-sequence classifiers (v4, v5, v6, v8, v9, v10): shared backbone per slice -> [projection] ->
[RNN] -> pooling over slices -> level conditioning -> head(s). v7's 2.5D model is in stack_model.py."""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn

from harness.config import Config, ModelConfig
from harness.models.backbone import create_backbone
from harness.models.blocks import (AttentionPool, ClassifierHead, CoralCEHeads, FeatureProjection, FiLM,
                                   LevelConcat, MainAuxHeads, SelfAttentionMeanPool, SequenceRNN,
                                   SliceAggregator)

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


def _recurrent_trunk(m: ModelConfig, rnn: str, mlp_proj: bool) -> tuple[dict[str, nn.Module], int]:
    """Backbone -> projection (v4/v5/v6 MLP, v9 plain Linear) -> bidirectional RNN; parts and RNN output width."""
    backbone = create_backbone(m)
    proj = (FeatureProjection(backbone.num_features, m.proj_dim, m.dropout) if mlp_proj
            else nn.Linear(backbone.num_features, m.proj_dim))
    sequence = SequenceRNN(rnn, m.proj_dim, m.seq_hidden, m.seq_layers, m.seq_dropout)
    return dict(backbone=backbone, proj=proj, sequence=sequence), 2 * m.seq_hidden


def classifier_head(m: ModelConfig, in_dim: int) -> ClassifierHead:
    """The 3-class MLP head of v5, v7, v8, v9 (with the prior bias when model.head_bias is set)."""
    return ClassifierHead(in_dim, m.head_hidden, NUM_CLASSES, m.dropout, m.head_dropout, bias=m.head_bias)


def build_v4(cfg: Config) -> SliceSequenceModel:
    """SpineSeqAttentionWithAux (VARIANTS.md §4.4): MLP proj, BiLSTM, MHA -> mean, level concat, main + aux heads."""
    m = cfg.model
    trunk, width = _recurrent_trunk(m, "lstm", mlp_proj=True)
    return SliceSequenceModel(
        **trunk,
        pool=SelfAttentionMeanPool(width, m.attn_heads, m.dropout),
        level=LevelConcat(NUM_LEVELS, m.level_dim),
        head=MainAuxHeads(width + m.level_dim, m.head_hidden, m.aux_hidden, m.dropout, bias=m.head_bias),
        names=dict(proj="feature_proj", sequence="lstm", pool="attention", level="level_embedding", head="heads"),
    )


build_v10 = build_v4  # SpineModelV10 (§10.4) is v4's architecture unchanged; v10 differs only in training


def _film_gru_trunk(m: ModelConfig) -> tuple[dict[str, nn.Module], int]:
    """v5/v6 shared trunk (§5.4, §6.4): MLP proj, BiGRU, tanh attention pool, FiLM; parts and context width."""
    trunk, width = _recurrent_trunk(m, "gru", mlp_proj=True)
    return dict(trunk, pool=AttentionPool(width, m.attn_hidden), level=FiLM(NUM_LEVELS, width)), width


_FILM_GRU_NAMES = dict(proj="feature_proj", sequence="gru", pool="attn_pool", level="film")


def build_v5(cfg: Config) -> SliceSequenceModel:
    """SpineModelV5 (§5.4): the FiLM/GRU trunk and one MLP classifier."""
    trunk, width = _film_gru_trunk(cfg.model)
    return SliceSequenceModel(**trunk, head=classifier_head(cfg.model, width),
                              names=_FILM_GRU_NAMES | {"head": "classifier"})


def build_v6(cfg: Config) -> SliceSequenceModel:
    """SpineModelV6 (§6.4): the v5 trunk with a CORAL ordinal head and a CE head on one hidden layer."""
    m = cfg.model
    trunk, width = _film_gru_trunk(m)
    head = CoralCEHeads(width, m.head_hidden, m.dropout, m.head_dropout, m.ordinal_bias, bias=m.head_bias)
    return SliceSequenceModel(**trunk, head=head, names=_FILM_GRU_NAMES | {"head": "heads"})


def build_v8(cfg: Config) -> SliceSequenceModel:
    """SpineModelV8 (§8.4): no projection or RNN; learned global slice weights, level concat, MLP head."""
    m = cfg.model
    backbone = create_backbone(m)
    return SliceSequenceModel(
        backbone=backbone, proj=None, sequence=None,
        pool=SliceAggregator(cfg.data.num_slices),
        level=LevelConcat(NUM_LEVELS, m.level_dim),
        head=classifier_head(m, backbone.num_features + m.level_dim),
        names=dict(pool="aggregator", level="level_embed", head="classifier"),
    )


def build_v9(cfg: Config) -> SliceSequenceModel:
    """SpineModelV9 (§9.4): plain Linear proj, BiGRU, attention-MIL pool, level concat, MLP head with prior bias."""
    m = cfg.model
    trunk, width = _recurrent_trunk(m, "gru", mlp_proj=False)
    return SliceSequenceModel(
        **trunk,
        pool=AttentionPool(width, m.attn_hidden),
        level=LevelConcat(NUM_LEVELS, m.level_dim),
        head=classifier_head(m, width + m.level_dim),
        names=dict(proj="feature_proj", sequence="gru", pool="attention", level="level_embed", head="classifier"),
    )
