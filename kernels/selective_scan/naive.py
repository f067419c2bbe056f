"""Sequential reference of the Mamba-1 selective scan (S6): the test oracle.

One time step at a time, exactly the recurrence (zero-order hold on A, Euler on B):
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t        h: (batch, dim, N)
    y_t = <h_t, C_t> + D * u_t,   out = y * silu(z)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import compute_dtype


def per_channel(BC: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """(batch, N, L), grouped (batch, G, N, L) or time-invariant (dim, N) -> (batch or 1, dim, N, L);
    channel d uses group d // (dim / G)."""
    if BC.dim() == 2:
        return BC[None, :, :, None].expand(-1, -1, -1, length)
    if BC.dim() == 3:
        return BC.unsqueeze(1).expand(-1, dim, -1, -1)
    return BC.repeat_interleave(dim // BC.shape[1], dim=1)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, reverse=False):
    """u, delta, z: (batch, dim, L); A: (dim, N); B, C: (batch, N, L), (batch, G, N, L) or (dim, N);
    D, delta_bias: (dim,).

    Returns out (batch, dim, L) in u's dtype, and with `return_last_state` the state after the last step
    processed, (batch, dim, N), in float32 (float64 for float64 inputs).
    """
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    uf, dt, Af = u.to(dtype), delta.to(dtype), A.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Bf, Cf = (per_channel(t.to(dtype), dim, length) for t in (B, C))
    h = torch.zeros(batch, dim, Af.shape[1], dtype=dtype, device=u.device)
    ys = [None] * length
    for t in (reversed(range(length)) if reverse else range(length)):
        h = torch.exp(dt[:, :, t, None] * Af) * h + (dt[:, :, t] * uf[:, :, t])[..., None] * Bf[..., t]
        ys[t] = (h * Cf[..., t]).sum(-1)
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + uf * D.to(dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    out = y.to(u.dtype)
    return (out, h) if return_last_state else out
