"""One-step recurrent update of the Mamba-2 SSD scan, for streaming inference."""

from __future__ import annotations

import torch

from .._checks import check_groups, check_optional, check_pair, check_tensor, compute_dtype
from .common import process_dt, skip_and_gate


def ssd_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                     dt_limit=(0.0, float("inf"))):
    """Advance `state` by one step in place and return that step's output.

    state: (batch, H, P, N) float32/float64, updated in place; x, z: (batch, H, P); dt: (batch, H);
    A, dt_bias: (H,); B, C: (batch, G, N); D: (H,) or (H, P). Returns out (batch, H, P) in x's dtype.
    Running it over t = 0..L-1 equals `mamba_chunk_scan_combined` on the whole sequence.
    """
    dev = state.device
    check_tensor("state", state, "(batch, H, P, N)", (None, None, None, None), dev)
    if state.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"state: expected float32 or float64 (the scan keeps its state in float32), got {state.dtype}")
    batch, heads, p, n = state.shape
    check_tensor("x", x, "(batch, H, P)", (batch, heads, p), dev)
    check_tensor("dt", dt, "(batch, H)", (batch, heads), dev)
    check_tensor("A", A, "(H,)", (heads,), dev)
    check_tensor("B", B, "(batch, G, N)", (batch, None, n), dev)
    check_groups("B", B.shape[1], heads, "H")
    check_pair(("B", "C"), B, C, "(batch, G, N)", dev)
    if D is not None:
        check_tensor("D", D, "(H,) or (H, P)", (heads,) if D.dim() == 1 else (heads, p), dev)
    check_optional("z", z, "(batch, H, P)", (batch, heads, p), dev)
    check_optional("dt_bias", dt_bias, "(H,)", (heads,), dev)

    dtype = compute_dtype(state, x, dt, A, B, C, D, z, dt_bias)
    step = process_dt(dt, dt_bias, dt_softplus, dt_limit, dtype)[..., None, None]  # (batch, H, 1, 1)
    per_group = heads // B.shape[1]
    Bh = B.to(dtype).repeat_interleave(per_group, dim=1)[:, :, None, :]
    Ch = C.to(dtype).repeat_interleave(per_group, dim=1)[:, :, None, :]
    xf = x.to(dtype)
    new = torch.exp(step * A.to(dtype)[:, None, None]) * state.to(dtype) + step * xf[..., None] * Bh
    state.copy_(new)
    y = (new * Ch).sum(-1)
    return skip_and_gate(y[:, None], x[:, None], D, None if z is None else z[:, None])[:, 0].to(x.dtype)
