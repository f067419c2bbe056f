"""`CrossScanSSM`: ViM2's selective token mixer on a 2-D grid of tokens (VMamba's cross-scan)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..kernels import selective_scan_bidirectional_fn
from .recompute import recompute_saved
from .selective_ssm import check_ssd_heads, scan_direction


class CrossScanSSM(nn.Module):
    """Selective token mixer over an image's tokens: (batch, H, W, dim) -> (batch, H, W, dim).

    As ViM2 (MambaMixer, arXiv 2403.19888) builds it: Linear dim -> 2 * d_inner for x and the gate z
    (d_inner = expand * dim); x through a depthwise `d_conv` x `d_conv` conv and SiLU; four S6 scans, each
    with its own x/dt projections, A and D, over the tokens in row-major order forwards and backwards and in
    column-major order forwards and backwards (VMamba's cross-scan); their outputs, put back on the grid,
    are added, gated by silu(z) and projected back to dim. With ssm="s6" each order's two directions run as
    one fused bidirectional scan over the tokens in place: the tensors stay (batch, H * W, channels), the
    four x-projections are one GEMM, and the column-major pair walks the row-major grid down its columns
    (`column_grid_height`), so nothing is transposed or copied per order. ssm="ssd" uses Mamba-2 scalar-A
    heads of `headdim` channels. Initialisation as `SelectiveSSM`. Any H and W.
    """

    def __init__(self, dim: int, d_state: int = 16, expand: float = 2, d_conv: int = 3, dt_rank: int | str = "auto",
                 ssm: str = "s6", headdim: int = 64, ngroups: int = 1, chunk_size: int = 64, bias: bool = False,
                 conv_bias: bool = True, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 backend: str = "auto"):
        super().__init__()
        if ssm not in ("s6", "ssd"):
            raise ValueError(f"ssm: expected 's6' or 'ssd', got {ssm!r}")
        if d_conv < 1 or d_conv % 2 == 0:
            raise ValueError(f"d_conv: expected an odd kernel size (a centred window), got {d_conv}")
        d_inner = int(expand * dim)
        if dim < 1 or d_inner < 1:
            raise ValueError(f"dim: expected a positive size (with expand={expand}), got {dim}")
        headdim = check_ssd_heads(d_inner, headdim, ngroups) if ssm == "ssd" else headdim
        self.dim, self.d_inner, self.ssm = dim, d_inner, ssm
        dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else dt_rank
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=bias)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=d_conv // 2, groups=d_inner, bias=conv_bias)
        # Row-major forwards, backwards; column-major forwards, backwards.
        self.directions = nn.ModuleList(
            scan_direction(ssm, d_inner, dt_rank=dt_rank, headdim=headdim, ngroups=ngroups, chunk_size=chunk_size,
                           d_state=d_state, d_conv=0, causal=False, reverse=reverse, conv_bias=conv_bias,
                           dt_min=dt_min, dt_max=dt_max, dt_init_floor=dt_init_floor, backend=backend)
            for _ in range(2) for reverse in (False, True)
        )
        self.out_proj = nn.Linear(d_inner, dim, bias=bias)

    def _in_bias(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """in_proj's bias for x and for z (None, None without one)."""
        return (None, None) if self.in_proj.bias is None else self.in_proj.bias.chunk(2)

    def _u(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, H, W, dim) -> u = SiLU(depthwise conv(in_proj's x half of x)), (batch, H, W, d_inner); the
        conv and SiLU on channels-last memory."""
        u = F.linear(x, self.in_proj.weight[:self.d_inner], self._in_bias()[0])
        return F.silu(self.conv2d(u.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)

    def _z(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, H, W, dim) -> the gate z, in_proj's z half of x, (batch, H, W, d_inner)."""
        return F.linear(x, self.in_proj.weight[self.d_inner:], self._in_bias()[1])

    def _s6_orders(self, u: torch.Tensor, z: torch.Tensor, height: int) -> torch.Tensor:
        """u, z: (batch, L, d_inner), the tokens row-major -> the four scans' gated sum, (batch, L, d_inner).
        The four x-projections are one GEMM, run again in the backward rather than kept for the scans."""
        weights = [direction.x_proj.weight for direction in self.directions]

        def project():
            return F.linear(u, torch.cat(weights))

        params = project()
        fwd_row, bwd_row, fwd_col, bwd_col = (direction.scan_args(u.mT, p)  # p: (batch, L, dt_rank + 2N)
                                              for direction, p in zip(self.directions, params.chunk(4, dim=-1)))
        backend = self.directions[0].backend
        with recompute_saved(params, project, (u, *weights)):
            rows = selective_scan_bidirectional_fn(**{k: (fwd_row[k], bwd_row[k]) for k in fwd_row}, z=z.mT,
                                                   delta_softplus=True, backend=backend)
            cols = selective_scan_bidirectional_fn(**{k: (fwd_col[k], bwd_col[k]) for k in fwd_col}, z=z.mT,
                                                   delta_softplus=True, column_grid_height=height, backend=backend)
        return (rows + cols).mT

    def _ssd_orders(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """u, z: (batch, H, W, d_inner) -> the four SSD scans' gated sum, (batch, H, W, d_inner)."""
        _, height, width, _ = u.shape
        u, z = u.permute(0, 3, 1, 2), z.permute(0, 3, 1, 2)  # (batch, d_inner, H, W)
        rows = self.directions[0](u.flatten(2), z.flatten(2)) + self.directions[1](u.flatten(2), z.flatten(2))
        u_cols, z_cols = u.transpose(2, 3).flatten(2), z.transpose(2, 3).flatten(2)
        cols = self.directions[2](u_cols, z_cols) + self.directions[3](u_cols, z_cols)
        y = rows.unflatten(2, (height, width)) + cols.unflatten(2, (width, height)).transpose(2, 3)
        return y.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"x: expected shape (batch, H, W, dim={self.dim}), got {tuple(x.shape)}")
        batch, height, width, _ = x.shape
        # u and the gate z from in_proj's two halves as two GEMMs. u's GEMM, depthwise conv and SiLU are
        # recomputed in the backward from x, which z's GEMM keeps anyway: neither the conv's input nor its output
        # is saved. The scans would keep z for their backward: z's GEMM is run again there instead.
        if torch.is_autocast_enabled(x.device.type):  # one autocast copy of x, kept for both GEMMs
            x = x.to(torch.get_autocast_dtype(x.device.type))
        z = self._z(x)
        u = checkpoint(self._u, x, use_reentrant=False, preserve_rng_state=False)
        with recompute_saved(z, lambda: self._z(x), (x, *self.in_proj.parameters())):
            if self.ssm == "s6":
                y = self._s6_orders(u.reshape(batch, height * width, -1), z.reshape(batch, height * width, -1),
                                    height)
            else:
                y = self._ssd_orders(u, z)
        return self.out_proj(y).view(batch, height, width, self.dim)
