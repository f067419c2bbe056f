"""Fast PyTorch path of the Mamba-1 selective scan: a parallel prefix scan over L (no per-step loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import compute_dtype
from ..linear_scan import linear_scan
from .naive import per_channel


def _grouped(BC: torch.Tensor, groups: int, dim: int) -> torch.Tensor:
    """(batch, N, L) or (batch, G', N, L) -> a view broadcastable to (batch, groups, dim / groups, N, L)."""
    batch, n, length = BC.shape[0], BC.shape[-2], BC.shape[-1]
    g = 1 if BC.dim() == 3 else BC.shape[1]
    if g in (1, groups):
        return BC.reshape(batch, g, 1, n, length)
    return per_channel(BC, dim).reshape(batch, groups, dim // groups, n, length)


def selective_scan_parallel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            return_last_state=False, reverse=False):
    """Same arguments, shapes and results as `selective_scan_ref`; O(L log L) work, O(log L) depth.

    Materialises the (batch, dim, N, L) state, so it suits CPU training and tests; the Triton kernel
    is the memory-frugal path on GPU.
    """
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    n = A.shape[1]
    groups = 1 if B.dim() == 3 else B.shape[1]
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    uf, Bf, Cf = u.to(dtype), B.to(dtype), C.to(dtype)
    if reverse:
        dt, uf, Bf, Cf = dt.flip(-1), uf.flip(-1), Bf.flip(-1), Cf.flip(-1)
    # Channels split into (groups, channels per group) so grouped B/C broadcast without copies.
    shape = (batch, groups, dim // groups, 1, length)
    dt5 = dt.reshape(shape)
    decay = torch.exp(dt5 * A.to(dtype).reshape(1, groups, dim // groups, n, 1))
    drive = (dt5 * uf.reshape(shape)) * _grouped(Bf, groups, dim)
    h = linear_scan(decay, drive)  # (batch, groups, dim/groups, N, L)
    y = (h * _grouped(Cf, groups, dim)).sum(-2).reshape(batch, dim, length)
    if reverse:
        y = y.flip(-1)
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    out = y.to(u.dtype)
    if return_last_state:
        return out, h[..., -1].reshape(batch, dim, n)
    return out
