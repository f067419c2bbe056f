"""Fast PyTorch path of the Mamba-1 selective scan.

The decays and inputs of all steps are formed in two vectorised passes; the recurrence then advances one
time-major (batch, dim, N) slice per step, so every step reads and writes contiguous memory and autograd
stacks the per-step gradients once. On CPU this beats a log-depth parallel prefix scan by 10-40x at the
shapes we train (the prefix scan rewrites the whole (batch, dim, N, L) tensor log2(L) times, forward and
backward); the GPU path is the Triton kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import compute_dtype


def _time_major(BC: torch.Tensor, groups: int, dtype) -> torch.Tensor:
    """(batch, N, L) or (batch, G', N, L) -> (L, batch, G', 1, N), broadcastable over the channel groups."""
    if BC.dim() == 3:
        BC = BC[:, None]
    if BC.shape[1] not in (1, groups):  # B and C grouped differently: repeat into the finer grouping
        BC = BC.repeat_interleave(groups // BC.shape[1], dim=1)
    return BC.to(dtype).permute(3, 0, 1, 2)[:, :, :, None, :]


def selective_scan_fast(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False, reverse=False):
    """Same arguments, shapes and results as `selective_scan_ref`."""
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    n = A.shape[1]
    groups = math.lcm(*(1 if t.dim() == 3 else t.shape[1] for t in (B, C)))
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    # Time-major, channels split into (groups, channels per group): (L, batch, G, dim / G, 1).
    dt = dt.permute(2, 0, 1).reshape(length, batch, groups, dim // groups, 1)
    uf = u.to(dtype).permute(2, 0, 1).reshape(dt.shape)
    decay = torch.exp(dt * A.to(dtype).reshape(groups, dim // groups, n))  # (L, batch, G, dim / G, N)
    drive = (dt * uf) * _time_major(B, groups, dtype)
    Ct = _time_major(C, groups, dtype)
    h = torch.zeros_like(decay[0])
    ys = [None] * length
    steps = range(length - 1, -1, -1) if reverse else range(length)
    decays, drives, Cs = decay.unbind(0), drive.unbind(0), Ct.unbind(0)
    for t in steps:
        h = decays[t] * h + drives[t]
        ys[t] = (h * Cs[t]).sum(-1)
    y = torch.stack(ys, dim=-1).reshape(batch, dim, length)
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    out = y.to(u.dtype)
    if return_last_state:
        return out, h.reshape(batch, dim, n)
    return out
