"""One-step recurrent update of the Mamba-1 selective SSM, for streaming inference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_groups, check_optional, check_tensor, compute_dtype


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """Advance `state` by one step in place and return that step's output.

    state: (batch, dim, N) float32/float64, updated in place; x, dt, z: (batch, dim); A: (dim, N);
    B, C: (batch, N) or grouped (batch, G, N); D, dt_bias: (dim,). Returns out (batch, dim) in x's dtype.
    Running it over t = 0..L-1 equals `selective_scan_fn` on the whole sequence.
    """
    dev = state.device
    check_tensor("state", state, "(batch, dim, N)", (None, None, None), dev)
    if state.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"state: expected float32 or float64 (the scan keeps its state in float32), got {state.dtype}")
    batch, dim, n = state.shape
    check_tensor("x", x, "(batch, dim)", (batch, dim), dev)
    check_tensor("dt", dt, "(batch, dim)", (batch, dim), dev)
    check_tensor("A", A, "(dim, N)", (dim, n), dev)
    for name, t in (("B", B), ("C", C)):
        if isinstance(t, torch.Tensor) and t.dim() == 3:
            check_tensor(name, t, "(batch, G, N)", (batch, None, n), dev)
            check_groups(name, t.shape[1], dim, "dim")
        else:
            check_tensor(name, t, "(batch, N) or (batch, G, N)", (batch, n), dev)
    check_optional("D", D, "(dim,)", (dim,), dev)
    check_optional("z", z, "(batch, dim)", (batch, dim), dev)
    check_optional("dt_bias", dt_bias, "(dim,)", (dim,), dev)

    dtype = compute_dtype(state, x, dt, A, B, C, D, z, dt_bias)
    delta = dt.to(dtype)
    if dt_bias is not None:
        delta = delta + dt_bias.to(dtype)
    if dt_softplus:
        delta = F.softplus(delta)

    def per_channel(t):  # (batch, N) or (batch, G, N) -> (batch, dim, N)
        t = t.to(dtype)
        return t.unsqueeze(1) if t.dim() == 2 else t.repeat_interleave(dim // t.shape[1], dim=1)

    xf = x.to(dtype)
    new = torch.exp(delta[..., None] * A.to(dtype)) * state.to(dtype) + (delta * xf)[..., None] * per_channel(B)
    state.copy_(new)
    out = (new * per_channel(C)).sum(-1)
    if D is not None:
        out = out + xf * D.to(dtype)
    if z is not None:
        out = out * F.silu(z.to(dtype))
    return out.to(x.dtype)
