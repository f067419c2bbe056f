"""`ChannelWiseSelectiveMixer`: ViM2's selective channel mixer, each token's channels scanned as a sequence."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..kernels import selective_scan_projected_bidirectional_fn
from .recompute import recompute_saved
from .selective_ssm import scan_direction


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
    backend each direction's conv and SiLU and the scan's delta, B and C are computed inside the kernels
    (`selective_scan_projected_bidirectional_fn`) instead of being stored per channel step. The lifted
    features are stored channel by channel, all tokens' features of a channel in one contiguous run, so each
    channel step of the scans reads and writes contiguous runs (stored token by token, a step's loads would
    lie `dim` elements apart). Under autocast the channel-wise linear maps run in the autocast dtype, as
    nn.Linear would.
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
        # Per direction: e = expand features per channel step, dt rank 1; with ssm="ssd" one head of e.
        self.directions = nn.ModuleList(
            scan_direction(ssm, expand, dt_rank=1, headdim=expand, ngroups=1, chunk_size=chunk_size, d_state=d_state,
                           d_conv=d_conv, causal=True, reverse=reverse, conv_bias=True, dt_min=dt_min, dt_max=dt_max,
                           dt_init_floor=dt_init_floor, backend=backend)
            for reverse in (False, True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[-1] != self.dim:
            raise ValueError(f"x: expected shape (batch, ..., dim={self.dim}), got {tuple(x.shape)}")
        batch, e = x.shape[0], self.expand
        h = x.reshape(batch, -1, self.dim)  # (batch, tokens, dim)
        tokens = h.shape[1]
        # The per-channel maps as (2, dim, 1, e): scan input and gate, each channel's e weights.
        weight, bias = (p.unflatten(1, (2, e)).transpose(0, 1)[:, :, None] for p in (self.in_weight, self.in_bias))
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            h, weight, bias = h.to(dtype), weight.to(dtype), bias.to(dtype)
        # u, z: (batch, dim, tokens, e) each, views of one tensor that holds each channel's tokens x e values
        # (of u, of z) as contiguous runs, one per channel step of the scans (h is transposed first, or addcmul
        # would follow its layout).
        h = h.transpose(1, 2).contiguous()

        def lift():
            return torch.addcmul(bias, h[:, None, :, :, None], weight)

        uz = lift()
        u, z = uz.unbind(1)
        if self.ssm == "s6":
            # Tokens folded into channels, (batch, tokens * e, dim) seen through a transpose; the conv and delta,
            # B and C computed per token from its e features. The scans would keep u and z for their backward:
            # they are lifted from h (which addcmul keeps) again there instead.
            *scan, conv_weight, conv_bias = zip(*((u.flatten(2).mT, *d.projected_args()) for d in self.directions))
            with recompute_saved(uz, lift, (h, weight, bias)):
                y = selective_scan_projected_bidirectional_fn(*scan, z=z.flatten(2).mT, conv_weight=conv_weight,
                                                              conv_bias=conv_bias, backend=self.directions[0].backend)
            y = y.mT.unflatten(2, (tokens, e))
        else:
            u, z = (t.permute(0, 2, 3, 1).flatten(0, 1) for t in (u, z))  # (batch * tokens, e, dim)
            y = sum(direction(u, z) for direction in self.directions)
            y = y.unflatten(0, (batch, tokens)).permute(0, 3, 1, 2)
        # y: (batch, dim, tokens, e) -> (batch, tokens, dim), stored channels last as x is
        out = (y * self.out_weight[:, None].to(y.dtype)).sum(-1) + self.out_bias[:, None].to(y.dtype)
        out = out.mT.contiguous()
        return out.reshape(x.shape)
