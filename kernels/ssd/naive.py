"""Sequential reference of the Mamba-2 SSD scan: the test oracle.

Per head h (scalar decay A_h), with head h reading B/C group h // (H / G):
    S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T        S: (batch, H, P, N)
    y_t = S_t C_t + D x_t,   out = y * silu(z)
"""

from __future__ import annotations

import torch

from .._checks import compute_dtype
from .common import process_dt, skip_and_gate


def mamba_chunk_scan_ref(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None,
                         dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False,
                         reverse=False):
    """x, z: (batch, L, H, P); dt: (batch, L, H); A, dt_bias: (H,); B, C: (batch, L, G, N);
    D: (H,) or (H, P); initial_states: (batch, H, P, N).

    Returns out (batch, L, H, P) in x's dtype and, with `return_final_states`, the state after the last
    step processed, (batch, H, P, N), in float32 (float64 for float64 inputs).
    """
    dtype = compute_dtype(x, dt, A, B, C, D, z, dt_bias, initial_states)
    batch, length, heads, p = x.shape
    n = B.shape[-1]
    per_group = heads // B.shape[2]
    step = process_dt(dt, dt_bias, dt_softplus, dt_limit, dtype)
    xf, Af = x.to(dtype), A.to(dtype)
    Bh = B.to(dtype).repeat_interleave(per_group, dim=2)
    Ch = C.to(dtype).repeat_interleave(per_group, dim=2)
    if initial_states is None:
        s = torch.zeros(batch, heads, p, n, dtype=dtype, device=x.device)
    else:
        s = initial_states.to(dtype)
    ys = [None] * length
    for t in (reversed(range(length)) if reverse else range(length)):
        dt_t = step[:, t, :, None, None]
        s = torch.exp(dt_t * Af[:, None, None]) * s + dt_t * xf[:, t, :, :, None] * Bh[:, t, :, None, :]
        ys[t] = (s * Ch[:, t, :, None, :]).sum(-1)
    out = skip_and_gate(torch.stack(ys, dim=1), x, D, z).to(x.dtype)
    return (out, s) if return_final_states else out
