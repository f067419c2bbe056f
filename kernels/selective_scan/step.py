"""One-step recurrent update of the selective SSM, for streaming inference and decoding.

Two forms, as mamba_ssm's `selective_state_update` takes them: Mamba-1's (state (batch, dim, N)) and the
multi-head form Mamba-2 decoding uses (state (batch, H, P, N)). Both run as the multi-head form: a
Mamba-1 state is one head of dim channels, or with B/C in G groups G heads of dim / G channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._backend import HAS_TRITON, resolve_backend
from .._checks import check_groups, check_optional, check_tensor, compute_dtype

if HAS_TRITON:
    from .step_triton import state_update_triton


def _check_bc_groups(name, t, batch, n, heads, heads_name, dev):
    check_tensor(name, t, "(batch, G, N)", (batch, None, n), dev)
    check_groups(name, t.shape[1], heads, heads_name)


def _heads_form(state, x, dt, A, B, C, D, z, dt_bias):
    """Check the arguments of either form and return them as the multi-head form (views, no copies)."""
    dev = state.device
    batch, heads, headdim, n = state.shape
    check_tensor("x", x, "(batch, H, P)", (batch, heads, headdim), dev)
    check_tensor("dt", dt, "(batch, H, P)", (batch, heads, headdim), dev)
    check_tensor("A", A, "(H, P, N)", (heads, headdim, n), dev)
    _check_bc_groups("B", B, batch, n, heads, "H", dev)
    _check_bc_groups("C", C, batch, n, heads, "H", dev)
    check_optional("D", D, "(H, P)", (heads, headdim), dev)
    check_optional("z", z, "(batch, H, P)", (batch, heads, headdim), dev)
    check_optional("dt_bias", dt_bias, "(H, P)", (heads, headdim), dev)
    return state, x, dt, A, B, C, D, z, dt_bias


def _channels_form(state, x, dt, A, B, C, D, z, dt_bias):
    """Check Mamba-1's form (state (batch, dim, N)) and view it as heads: one per finest group of B and C."""
    dev = state.device
    batch, dim, n = state.shape
    check_tensor("x", x, "(batch, dim)", (batch, dim), dev)
    check_tensor("dt", dt, "(batch, dim)", (batch, dim), dev)
    check_tensor("A", A, "(dim, N)", (dim, n), dev)
    for name, t in (("B", B), ("C", C)):
        if isinstance(t, torch.Tensor) and t.dim() == 3:
            _check_bc_groups(name, t, batch, n, dim, "dim", dev)
        else:
            check_tensor(name, t, "(batch, N) or (batch, G, N)", (batch, n), dev)
    check_optional("D", D, "(dim,)", (dim,), dev)
    check_optional("z", z, "(batch, dim)", (batch, dim), dev)
    check_optional("dt_bias", dt_bias, "(dim,)", (dim,), dev)
    B, C = (t if t.dim() == 3 else t[:, None] for t in (B, C))
    heads = math.lcm(B.shape[1], C.shape[1])
    p = dim // heads

    def heads_of(t):  # (..., dim) -> (..., heads, p)
        return None if t is None else t.unflatten(-1, (heads, p))

    return (state.unflatten(1, (heads, p)), heads_of(x), heads_of(dt), A.unflatten(0, (heads, p)), B, C,
            heads_of(D), heads_of(z), heads_of(dt_bias))


def _update_torch(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    """The multi-head update in float32 (float64 for float64 inputs); state stored back in its dtype."""
    dtype = compute_dtype(state, x, dt, A, B, C, D, z, dt_bias)
    heads = state.shape[1]
    step = dt.to(dtype)
    if dt_bias is not None:
        step = step + dt_bias.to(dtype)
    if dt_softplus:
        step = F.softplus(step)
    Bh, Ch = (t.to(dtype).repeat_interleave(heads // t.shape[1], dim=1)[:, :, None, :] for t in (B, C))
    xf = x.to(dtype)
    new = torch.exp(step[..., None] * A.to(dtype)) * state.to(dtype) + (step * xf)[..., None] * Bh
    state.copy_(new)
    out = (new * Ch).sum(-1)
    if D is not None:
        out = out + xf * D.to(dtype)
    if z is not None:
        out = out * F.silu(z.to(dtype))
    return out.to(x.dtype)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, *,
                           backend="auto"):
    """Advance `state` by one step in place and return that step's output; mamba_ssm's arguments.

    Mamba-1 form: state (batch, dim, N); x, dt, z: (batch, dim); A: (dim, N); B, C: (batch, N) or grouped
    (batch, G, N) with G dividing dim; D, dt_bias: (dim,). Returns out (batch, dim).
    Multi-head form (Mamba-2 decoding): state (batch, H, P, N); x, dt, z: (batch, H, P); A: (H, P, N);
    B, C: (batch, G, N) with G dividing H; D, dt_bias: (H, P). Returns out (batch, H, P). dt, dt_bias and A
    may be tied over P (and A over N) by stride 0, e.g. `A[:, None, None].expand(H, P, N)`.
    dt += dt_bias, softplus if `dt_softplus`;  state = exp(dt A) state + dt x B,  out = (<state, C> + D x) *
    silu(z). The state may be float16, bfloat16, float32 or float64 and keeps its dtype: the step computes in
    float32 (float64 if any input is float64) and rounds only what it stores; out in x's dtype. Running it
    over t = 0..L-1 equals `selective_scan_fn` on the whole sequence.
    `backend`: "torch", "triton" (one kernel launch; CUDA, or CPU under TRITON_INTERPRET=1; not float64) or
    "auto" (Triton for CUDA tensors that are not float64).
    """
    if not isinstance(state, torch.Tensor) or state.dim() not in (3, 4):
        got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
        raise ValueError(f"state: expected shape (batch, dim, N) or (batch, H, P, N), got {got}")
    check_tensor("state", state, "(batch, dim, N) or (batch, H, P, N)", (None,) * state.dim(), state.device)
    form = _heads_form if state.dim() == 4 else _channels_form
    args = form(state, x, dt, A, B, C, D, z, dt_bias)
    float64 = compute_dtype(*args) == torch.float64
    if resolve_backend(backend, state, has_kernel=True, float64=float64) == "triton":
        out = state_update_triton(*args, dt_softplus)
    else:
        out = _update_torch(*args, dt_softplus)
    return out.reshape(x.shape)
