"""Small building blocks shared by the slice-sequence variants (VARIANTS.md §4.4, §5.4, §8.4, §9.4)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class AttentionPool(nn.Module):
    """Non-gated tanh attention over slices: (B,S,D) -> pooled (B,D), weights (B,S) (v5, v9 AttentionMIL)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.score(x).squeeze(-1), dim=1)
        return torch.einsum("bs,bsd->bd", weights, x), weights


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


class LevelConcat(nn.Module):
    """Concatenate a learned embedding of the vertebral level: (B,D), (B,) -> (B,D+dim)."""

    def __init__(self, num_levels: int = 5, dim: int = 256):
        super().__init__()
        self.embed = nn.Embedding(num_levels, dim)  # default N(0,1) init, as the notebooks

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.embed(level).to(x.dtype)], dim=1)


class ClassifierHead(nn.Sequential):
    """LayerNorm -> Dropout -> Linear -> GELU -> Dropout -> Linear, optionally with a prior final bias."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float, head_dropout: float,
                 bias: Sequence[float] | None = None):
        super().__init__(nn.LayerNorm(in_dim), nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(),
                         nn.Dropout(head_dropout), nn.Linear(hidden, out_dim))
        if bias is not None:
            if len(bias) != out_dim:
                raise ValueError(f"ClassifierHead bias needs {out_dim} values, got {len(bias)}")
            with torch.no_grad():
                self[-1].bias.copy_(torch.as_tensor(bias, dtype=self[-1].bias.dtype))
