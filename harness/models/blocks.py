"""Building blocks of the notebook models (docs/variants.md §4.4-§10.4), each named for what it does."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn


# ---------------------------------------------------------------- per-slice features -> sequence
class FeatureProjection(nn.Sequential):
    """Dropout -> Linear -> LayerNorm -> GELU on per-slice features (v4, v5, v6 `feature_proj`)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__(nn.Dropout(dropout), nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.GELU())


class SequenceRNN(nn.Module):
    """Bidirectional batch-first GRU/LSTM over slices: (B,S,input) -> (B,S,2*hidden)."""

    def __init__(self, kind: str, input_size: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[kind]
        # torch warns about inter-layer dropout on a single layer, where it does nothing anyway
        self.rnn = rnn(input_size, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                       dropout=dropout if layers > 1 else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


# ---------------------------------------------------------------- pooling over slices
# Every pool maps (B,S,D) -> (pooled (B,D), {output name: per-slice weights}); the names are model outputs.
class AttentionPool(nn.Module):
    """Non-gated tanh attention over slices; weights (B,S) as 'attention' (v5/v6 AttentionPool, v9 AttentionMIL)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = torch.softmax(self.score(x).squeeze(-1), dim=1)
        return torch.einsum("bs,bsd->bd", weights, x), {"attention": weights}


class SelfAttentionMeanPool(nn.Module):
    """v4: multi-head self-attention over slices (no residual, no norm), then the mean over slices."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        attended, matrix = self.mha(x, x, x, need_weights=True, average_attn_weights=True)
        # matrix is (B, query, key); its mean over queries is how much each slice was attended to
        return attended.mean(dim=1), {"attention": matrix.mean(dim=1), "attention_matrix": matrix}


class SliceAggregator(nn.Module):
    """v8: softmax of S learned global scalars (the centre slice starts at 1, the rest at 0) weights the slices."""

    def __init__(self, num_slices: int):
        super().__init__()
        logits = torch.zeros(num_slices)
        logits[num_slices // 2] = 1.0
        self.slice_logits = nn.Parameter(logits)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = torch.softmax(self.slice_logits, dim=0).to(x.dtype)
        # the weights are input-independent; expanded to (B,S) so they batch like the other models' weights
        return torch.einsum("s,bsd->bd", weights, x), {"slice_weights": weights.expand(x.shape[0], -1)}


# ---------------------------------------------------------------- level conditioning: (B,D), (B,) -> (B,D')
class LevelConcat(nn.Module):
    """Concatenate a learned embedding of the vertebral level: (B,D), (B,) -> (B,D+dim)."""

    def __init__(self, num_levels: int = 5, dim: int = 256):
        super().__init__()
        self.embed = nn.Embedding(num_levels, dim)  # default N(0,1) init, as the notebooks

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.embed(level).to(x.dtype)], dim=1)


class FiLM(nn.Module):
    """Per-level scale and shift, gamma[level]*x + beta[level], starting as the identity (v5, v6, v7)."""

    def __init__(self, num_levels: int, dim: int):
        super().__init__()
        self.gamma = nn.Embedding(num_levels, dim)
        self.beta = nn.Embedding(num_levels, dim)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return self.gamma(level).to(x.dtype) * x + self.beta(level).to(x.dtype)


# ---------------------------------------------------------------- heads
def set_prior_bias(layer: nn.Linear, bias: Sequence[float] | None) -> None:
    """Start a final Linear at the given class-prior bias; None keeps PyTorch's init."""
    if bias is None:
        return
    if len(bias) != layer.out_features:
        raise ValueError(f"prior bias needs {layer.out_features} values, got {len(bias)}")
    with torch.no_grad():
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))


class HiddenLayer(nn.Sequential):
    """LayerNorm -> Dropout -> Linear -> GELU -> Dropout: the classifiers' hidden layer (v6 `ordinal_features`)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float, head_dropout: float):
        super().__init__(nn.LayerNorm(in_dim), nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(),
                         nn.Dropout(head_dropout))


class ClassifierHead(nn.Sequential):
    """LayerNorm -> Dropout -> Linear -> GELU -> Dropout -> Linear, optionally with a prior final bias."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float, head_dropout: float,
                 bias: Sequence[float] | None = None):
        super().__init__(*HiddenLayer(in_dim, hidden, dropout, head_dropout), nn.Linear(hidden, out_dim))
        set_prior_bias(self[-1], bias)


class MLPHead(nn.Sequential):
    """Linear -> GELU -> Dropout -> Linear, no norm (v4/v10 aux heads, v7 ordinal head)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class HeadSet(nn.Module):
    """Several heads on one context vector, each its own optimiser group; forward returns named outputs."""

    groups: tuple[str, ...] = ()  # attribute names (modules or bare Parameters), in the notebook's group order

    def param_groups(self) -> OrderedDict[str, list[nn.Parameter]]:
        parts = {name: getattr(self, name) for name in self.groups}
        return OrderedDict((name, [part] if isinstance(part, nn.Parameter) else list(part.parameters()))
                           for name, part in parts.items())


class MainAuxHeads(HeadSet):
    """v4/v10: the 3-class `main_classifier` plus the normal-vs-abnormal and moderate-vs-severe aux heads."""

    groups = ("main_classifier", "aux_binary", "aux_severity")

    def __init__(self, in_dim: int, hidden: int, aux_hidden: int, dropout: float,
                 bias: Sequence[float] | None = None):
        super().__init__()
        self.main_classifier = ClassifierHead(in_dim, hidden, 3, dropout, dropout, bias=bias)
        self.aux_binary = MLPHead(in_dim, aux_hidden, 2, dropout)
        self.aux_severity = MLPHead(in_dim, aux_hidden, 2, dropout)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.main_classifier(x), "binary": self.aux_binary(x), "severity": self.aux_severity(x)}


class CoralCEHeads(HeadSet):
    """v6: shared hidden layer -> CORAL ordinal logits (one weight vector + K-1 thresholds) and a CE head."""

    groups = ("ordinal_features", "ordinal_fc", "ordinal_bias", "ce_head")

    def __init__(self, in_dim: int, hidden: int, dropout: float, head_dropout: float,
                 ordinal_bias: Sequence[float], bias: Sequence[float] | None = None):
        super().__init__()
        self.ordinal_features = HiddenLayer(in_dim, hidden, dropout, head_dropout)
        self.ordinal_fc = nn.Linear(hidden, 1, bias=False)
        self.ordinal_bias = nn.Parameter(torch.as_tensor(ordinal_bias, dtype=torch.float32).clone())
        self.ce_head = nn.Linear(hidden, len(ordinal_bias) + 1)
        set_prior_bias(self.ce_head, bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.ordinal_features(x)
        # logit k models P(Y > k); the thresholds broadcast over the batch
        return {"logits": self.ce_head(h), "ordinal": self.ordinal_fc(h) + self.ordinal_bias.to(h.dtype)}
