"""Sequential reference of the Mamba-2 SSD scan: the test oracle.

Per head h (scalar decay A_h), with head h reading B/C group h // (H / G):
    S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T        S: (batch, H, P, N)
    y_t = S_t C_t + D x_t,   out = y * silu(z)
With seq_idx, S_{t-1} is zero at every step whose seq_idx differs from the previous step's in scan order.
"""

from __future__ import annotations

import torch

from .._checks import compute_dtype
from .common import process_dt, skip_and_gate


def mamba_chunk_scan_ref(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                         cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False,
                         return_varlen_states=False, reverse=False):
    """x, z: (batch, L, H, P); dt: (batch, L, H); A, dt_bias: (H,); B, C: (batch, L, G, N);
    D: (H,) or (H, P); initial_states: (batch, H, P, N); seq_idx: (batch, L) integers; cu_seqlens:
    (num_seqs + 1,) sequence boundaries along L (batch 1), used by `return_varlen_states`.

    Returns out (batch, L, H, P) in x's dtype; with `return_final_states` the state after the last step
    processed, (batch, H, P, N); with `return_varlen_states` the state after each sequence's last step in
    scan order, (num_seqs, H, P, N); states in float32 (float64 for float64 inputs).
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
    ys, states = [None] * length, [None] * length
    order = list(reversed(range(length))) if reverse else list(range(length))
    for i, t in enumerate(order):
        if seq_idx is not None and i > 0:
            s = torch.where((seq_idx[:, t] != seq_idx[:, order[i - 1]])[:, None, None, None], 0.0, s)
        dt_t = step[:, t, :, None, None]
        s = torch.exp(dt_t * Af[:, None, None]) * s + dt_t * xf[:, t, :, :, None] * Bh[:, t, :, None, :]
        ys[t], states[t] = (s * Ch[:, t, :, None, :]).sum(-1), s
    out = skip_and_gate(torch.stack(ys, dim=1), x, D, z).to(x.dtype)
    result = (out, s) if return_final_states else (out,)
    if return_varlen_states:
        lasts = cu_seqlens[:-1] if reverse else cu_seqlens[1:] - 1
        result += (torch.stack([states[t][0] for t in lasts.tolist()]),)
    return result if len(result) > 1 else out
