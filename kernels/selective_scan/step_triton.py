"""Triton kernel of the one-step selective state update (decoding): one launch per step.

A program owns BLOCK_P channels of one head of one batch row and all N states of each: it loads its state
tile in the state's dtype, computes in float32
    s = exp(dt A) s + dt x B,   out = <s, C> + D x, gated by silu(z),
stores s back in the state's dtype and writes out from the float32 s. Any strides: dt, dt_bias and A tied
over the head's channels (stride 0, Mamba-2's form) are read in place.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._backend import cdiv, launch_device, next_power_of_2
from .triton_kernels import _softplus


@triton.jit
def state_update_kernel(
    # pointers, each followed by its strides
    state_ptr, s_b, s_h, s_p, s_n,
    x_ptr, x_b, x_h, x_p,
    dt_ptr, dt_b, dt_h, dt_p,
    bias_ptr, bias_h, bias_p,
    A_ptr, A_h, A_p, A_n,
    B_ptr, B_b, B_g, B_n,
    C_ptr, C_b, C_g, C_n,
    D_ptr, D_h, D_p,
    z_ptr, z_b, z_h, z_p,
    out_ptr, o_b, o_h, o_p,
    # sizes: channels per head, states, heads per group of B and of C
    headdim, n, heads_per_B, heads_per_C,
    # meta
    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (cdiv(headdim, BLOCK_P), batch, heads). state: (batch, H, P, N); x, dt, z, out: (batch, H, P);
    dt_bias, D: (H, P); A: (H, P, N); B, C: (batch, G, N)."""
    pid_p, b, h = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p, mask_n = offs_p < headdim, offs_n < n
    mask_pn = mask_p[:, None] & mask_n[None, :]

    dt = tl.load(dt_ptr + b * dt_b + h * dt_h + offs_p * dt_p, mask=mask_p, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + h * bias_h + offs_p * bias_p, mask=mask_p, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = _softplus(dt)
    x = tl.load(x_ptr + b * x_b + h * x_h + offs_p * x_p, mask=mask_p, other=0.0).to(tl.float32)
    A = tl.load(A_ptr + h * A_h + offs_p[:, None] * A_p + offs_n[None, :] * A_n, mask=mask_pn, other=0.0)
    Bv = tl.load(B_ptr + b * B_b + (h // heads_per_B) * B_g + offs_n * B_n, mask=mask_n, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + b * C_b + (h // heads_per_C) * C_g + offs_n * C_n, mask=mask_n, other=0.0).to(tl.float32)

    state_ptrs = state_ptr + b * s_b + h * s_h + offs_p[:, None] * s_p + offs_n[None, :] * s_n
    s = tl.load(state_ptrs, mask=mask_pn, other=0.0).to(tl.float32)
    s = tl.exp(dt[:, None] * A.to(tl.float32)) * s + (dt * x)[:, None] * Bv[None, :]
    tl.store(state_ptrs, s.to(state_ptr.dtype.element_ty), mask=mask_pn)

    out = tl.sum(s * Cv[None, :], axis=1)
    if HAS_D:
        out += x * tl.load(D_ptr + h * D_h + offs_p * D_p, mask=mask_p, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + b * z_b + h * z_h + offs_p * z_p, mask=mask_p, other=0.0).to(tl.float32)
        out *= z * tl.sigmoid(z)
    tl.store(out_ptr + b * o_b + h * o_h + offs_p * o_p, out.to(out_ptr.dtype.element_ty), mask=mask_p)


def _strides(t, count):
    """t's strides, or `count` zeros for an absent t (its pointer is then never read)."""
    return t.stride() if t is not None else (0,) * count


def state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    """The multi-head form of `selective_state_update` on the kernel (checked arguments): state (batch, H, P, N)
    updated in place, out (batch, H, P) in x's dtype."""
    batch, heads, headdim, n = state.shape
    out = torch.empty_like(x)
    block_n = next_power_of_2(n)
    block_p = max(1, min(next_power_of_2(headdim), 4096 // block_n, 64))
    grid = (cdiv(headdim, block_p), batch, heads)
    with launch_device(x):
        state_update_kernel[grid](
            state, *state.stride(), x, *x.stride(), dt, *dt.stride(), dt_bias, *_strides(dt_bias, 2),
            A, *A.stride(), B, *B.stride(), C, *C.stride(), D, *_strides(D, 2), z, *_strides(z, 3),
            out, *out.stride(), headdim, n, heads // B.shape[1], heads // C.shape[1],
            HAS_BIAS=dt_bias is not None, HAS_D=D is not None, HAS_Z=z is not None, SOFTPLUS=dt_softplus,
            BLOCK_P=block_p, BLOCK_N=block_n, num_warps=4 if block_p * block_n >= 1024 else 1,
        )
    return out
