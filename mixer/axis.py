"""`AlongAxis`: run a sequence layer along one axis of a many-axis tensor."""

from __future__ import annotations

import torch
import torch.nn as nn


class AlongAxis(nn.Module):
    """Apply `layer`, a (batch, L, dim) -> (batch, L, dim) module, along `axis` of x (..., dim).

    Every other axis but the last (features) is folded into the batch. For x of shape (B, M, P, D),
    axis=2 scans the P positions of each of the B * M rows; axis=1 scans the M entries at each of the
    B * P positions. Keyword arguments (a streaming state, say) pass through to `layer`.
    """

    def __init__(self, layer: nn.Module, axis: int):
        super().__init__()
        self.layer, self.axis = layer, axis

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        moved = x.movedim(self.axis, -2)
        folded = moved.reshape(-1, *moved.shape[-2:])
        return self.layer(folded, **kwargs).reshape(moved.shape).movedim(-2, self.axis)
