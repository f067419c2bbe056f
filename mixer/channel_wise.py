"""`ChannelWiseSelectiveMixer`: ViM2's selective channel mixer, each token's channels scanned as a sequence."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..kernels import selective_scan_projected_bidirectional_fn
from .selective_ssm import _ScanDirection


class ChannelWiseSelectiveMixer(nn.Module):
    """Bidirectional selective mixer along the channels of every token: (batch, *tokens, dim) -> same shape.

    ViM2's "CW-Linear -> CW-S6 -> CW-Linear" (MambaMixer, arXiv 2403.19888): the `dim` channels of each
    token form the sequence. A channel-wise linear map (its own weights per channel) lifts each channel's
    value to `expand` features for the scan and `expand` for the gate z; per direction a causal depthwise
    conv1d along the channels, SiLU and an S6 scan with its own x/dt projections, A and D, one direction
    from the first channel to the last and one back; their sum is gated by silu(z), and a channel-wise
    linear map takes each channel's features back to one value. Parameters grow with `dim` only, so any
    number of tokens (any image size) works.

    The tokens of a batch row are scanned together as `tokens * expand` channels whose B and C are grouped
    per token, so one kernel launch covers them (no batch of millions of one-token rows); with the Triton
    backend the scan's delta, B and C are projected inside the kernels
    (`selective_scan_projected_bidirectional_fn`) instead of being stored per channel step.
    """

    def __init__(self, dim: int, expand: int = 2, d_state: int = 16, d_conv: int = 4, ssm: str = "s6",
                 chunk_size: int = 64, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 backend: str = "auto"):
        super().__init__()
        if ssm not in ("s6", "ssd"):
            raise ValueError(f"ssm: expected 's6' or 'ssd', got {ssm!r}")
        if dim < 1 or expand < 1:
            raise ValueError(f"dim, expand: expected positive ints, got {dim}, {expand}")
        self.dim, self.expand, self.ssm = dim, expand, ssm
        # Channel-wise linear maps, initialised as nn.Linear(1, 2 * expand) and nn.Linear(expand, 1) per channel.
        self.in_weight = nn.Parameter(torch.empty(dim, 2 * expand).uniform_(-1, 1))
        self.in_bias = nn.Parameter(torch.empty(dim, 2 * expand).uniform_(-1, 1))
        bound = 1 / math.sqrt(expand)
        self.out_weight = nn.Parameter(torch.empty(dim, expand).uniform_(-bound, bound))
        self.out_bias = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.directions = nn.ModuleList(
            _ScanDirection(expand, d_state, d_conv, 1, ssm, expand, 1, chunk_size, True, reverse, True, dt_min,
                           dt_max, dt_init_floor, backend)
            for reverse in (False, True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[-1] != self.dim:
            raise ValueError(f"x: expected shape (batch, ..., dim={self.dim}), got {tuple(x.shape)}")
        batch, e = x.shape[0], self.expand
        h = x.reshape(batch, -1, self.dim)  # (batch, tokens, dim)
        tokens = h.shape[1]
        # (batch * tokens, e, dim) each: every token a sequence over its channels, made in that layout
        xz = torch.addcmul(self.in_bias.T, h[:, :, None, :], self.in_weight.T)  # (batch, tokens, 2e, dim)
        u, z = xz.reshape(batch * tokens, 2 * e, self.dim).chunk(2, dim=1)
        if self.ssm == "s6":
            # Tokens folded into channels; delta, B and C projected per token from its e features.
            pair = [(d.activate(u).reshape(batch, tokens * e, self.dim), -torch.exp(d.A_log.float()), d.x_proj.weight,
                     d.dt_proj.weight[:, 0], d.dt_proj.bias.float(), d.D.float()) for d in self.directions]
            y = selective_scan_projected_bidirectional_fn(*zip(*pair), z=z.reshape(batch, tokens * e, self.dim),
                                                          backend=self.directions[0].backend)
        else:
            y = sum(direction(u, z) for direction in self.directions)
        y = y.reshape(batch, tokens, e, self.dim)
        out = (y * self.out_weight.T.to(y.dtype)).sum(2) + self.out_bias.to(y.dtype)
        return out.reshape(x.shape)
