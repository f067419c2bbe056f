"""MambaMixer's two selective mixers: along tokens and along channels."""

from __future__ import annotations

import torch

from .selective_ssm import SelectiveSSM


class SelectiveTokenMixer(SelectiveSSM):
    """Selective token mixer: the selective SSM run along the sequence, (batch, L, dim) -> (batch, L, dim).

    Same arguments as `SelectiveSSM` (`d_model` = dim); unidirectional with a causal conv by default, as
    TSM2 mixes time; `bidirectional=True` for non-causal sequences.
    """


class SelectiveChannelMixer(SelectiveSSM):
    """Selective channel mixer: the selective SSM run along channels, (batch, L, dim) -> (batch, L, dim).

    The tensor is transposed so the `dim` channels form the sequence and the `num_tokens` tokens the
    features, and scanned in both directions (MambaMixer's bidirectional channel mixer). Its projections
    are sized by `num_tokens`, so an instance works for that token count only.
    """

    def __init__(self, num_tokens: int, *, bidirectional: bool = True, **kwargs):
        super().__init__(num_tokens, bidirectional=bidirectional, **kwargs)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() != 3 or hidden.shape[1] != self.d_model:
            raise ValueError(f"hidden: expected shape (batch, L={self.d_model}, dim) (the channel mixer is built "
                             f"for {self.d_model} tokens), got {tuple(hidden.shape)}")
        return super().forward(hidden.transpose(1, 2)).transpose(1, 2)
