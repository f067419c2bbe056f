"""Time-step preprocessing shared by every SSD path."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def process_dt(dt: torch.Tensor, dt_bias, dt_softplus: bool, dt_limit, dtype: torch.dtype) -> torch.Tensor:
    """dt (..., H) -> clamp(softplus?(dt + dt_bias), *dt_limit) in `dtype`, as mamba_ssm orders it."""
    dt = dt.to(dtype)
    if dt_bias is not None:
        dt = dt + dt_bias.to(dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    lo, hi = dt_limit
    if lo > 0.0 or hi < float("inf"):
        dt = dt.clamp(min=lo, max=hi)
    return dt


def skip_and_gate(y: torch.Tensor, x: torch.Tensor, D, z) -> torch.Tensor:
    """y + D * x, then * silu(z); y, x, z: (batch, L, H, P); D: (H,) or (H, P)."""
    if D is not None:
        Df = D.to(y.dtype)
        y = y + x.to(y.dtype) * (Df[:, None] if Df.dim() == 1 else Df)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y
