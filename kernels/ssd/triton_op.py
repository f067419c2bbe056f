"""Launchers, torch custom ops (`mambamixer::ssd_fwd` / `_bwd`) and autograd around the Triton SSD kernels.

The ops scan the processed time step (dt after bias, softplus and clamp, float32) and leave the D skip and
the z gate to the caller, so PyTorch's autograd differentiates those elementwise steps.
"""

from __future__ import annotations

import torch

from .._backend import cdiv, launch_device, next_power_of_2
from .triton_kernels import ssd_bwd_kernel, ssd_fwd_kernel


def _padded(headdim: int, d_state: int) -> tuple[int, int]:
    """P and N padded to powers of two of at least 16 (tl.dot's minimum)."""
    return max(16, next_power_of_2(headdim)), max(16, next_power_of_2(d_state))


def fits(headdim: int, d_state: int) -> bool:
    """Whether the kernels take heads of `headdim` channels with states of `d_state`: padded P * N at most
    2**13, so that a chunk of 32 steps fits the backward in the H100's shared memory."""
    bp, bn = _padded(headdim, d_state)
    return bp * bn <= 2**13


# The chunk the kernels scan in, whatever chunk_size asks for (the result is the same for any chunk). With
# 64-step chunks, triton 3.6 builds wgmma code for the H100 that faults with an illegal memory access in some
# configurations (16-bit products, or 8 warps; recorded in BENCHMARKS.md), and heads with padded P * N above
# 4096 would not fit the backward in shared memory; 32 is the chunk checked on the H100 in every dtype.
CHUNK = 32


def _config(x, B, C, chunk):
    """Kernel constants. The products take bfloat16 (float16) operands where x, B and C are all bfloat16
    (float16), as mamba_ssm's do, and otherwise float32 operands in "tf32x3" (three TF32 products, float32's
    accuracy); they accumulate in float32."""
    bp, bn = _padded(x.shape[3], B.shape[3])
    precision = "tf32x3"
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
        if all(t.dtype == dtype for t in (x, B, C)):
            precision = name
    return dict(T=chunk, BP=bp, BN=bn, PRECISION=precision, num_warps=4)


def _shape_args(x, B, chunk_size):
    batch, length, heads, p = x.shape
    return [length, heads, p, B.shape[3], heads // B.shape[2], cdiv(length, chunk_size)]


def _seq_args(seq):
    """seq (batch, L) int32 and its strides, or None and zeros (HAS_SEQ off)."""
    return (seq, *seq.stride()) if seq is not None else (None, 0, 0)


@torch.library.custom_op("mambamixer::ssd_fwd", mutates_args=())
def ssd_fwd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
            initial_states: torch.Tensor | None, seq: torch.Tensor | None, chunk_size: int, reverse: bool,
            save_states: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y (batch, L, H, P) float32 (no D, no gate), the state entering each chunk (batch, chunks, H, P, N;
    empty unless save_states, which the backward needs) and the final state (batch, H, P, N), both float32.
    dt (batch, L, H) and A (H,) float32; seq: each position's sequence id (batch, L) int32, nondecreasing in
    scan order, or None."""
    batch, length, heads, p = x.shape
    n = B.shape[3]
    chunks = cdiv(length, chunk_size)
    f32 = dict(dtype=torch.float32, device=x.device)
    y = torch.empty(batch, length, heads, p, **f32)
    states = torch.empty((batch, chunks, heads, p, n) if save_states else (0,), **f32)
    final = torch.empty(batch, heads, p, n, **f32)
    init = final if initial_states is None else initial_states.contiguous()
    with launch_device(x):
        ssd_fwd_kernel[(batch * heads,)](
            x, *x.stride(), dt, *dt.stride(), A, B, *B.stride(), C, *C.stride(), *_seq_args(seq), init, y, *y.stride(),
            states, final, *_shape_args(x, B, chunk_size), HAS_INIT=initial_states is not None, REVERSE=reverse,
            SAVE_STATES=save_states, HAS_SEQ=seq is not None, **_config(x, B, C, chunk_size))
    return y, states, final


@ssd_fwd.register_fake
def _(x, dt, A, B, C, initial_states, seq, chunk_size, reverse, save_states):
    batch, length, heads, p = x.shape
    n = B.shape[3]
    f32 = dict(dtype=torch.float32)
    return (x.new_empty(batch, length, heads, p, **f32),
            x.new_empty((batch, cdiv(length, chunk_size), heads, p, n) if save_states else (0,), **f32),
            x.new_empty(batch, heads, p, n, **f32))


@torch.library.custom_op("mambamixer::ssd_bwd", mutates_args=())
def ssd_bwd(dy: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
            seq: torch.Tensor | None, states: torch.Tensor, has_init: bool, chunk_size: int, reverse: bool
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dx, ddt, dA, dB, dC (float32, the inputs' shapes) and the initial state's gradient (empty without
    one) from dy (batch, L, H, P) float32."""
    batch, length, heads, p = x.shape
    groups, n = B.shape[2], B.shape[3]
    f32 = dict(dtype=torch.float32, device=x.device)
    dx = torch.empty(batch, length, heads, p, **f32)
    ddt = torch.empty(batch, length, heads, **f32)
    dbh = torch.empty(batch, length, heads, n, **f32)
    dch = torch.empty(batch, length, heads, n, **f32)
    da = torch.empty(batch, heads, **f32)
    dinit = torch.empty((batch, heads, p, n) if has_init else (0,), **f32)
    with launch_device(x):
        ssd_bwd_kernel[(batch * heads,)](
            x, *x.stride(), dt, *dt.stride(), A, B, *B.stride(), C, *C.stride(), *_seq_args(seq), dy, *dy.stride(),
            states, dx, ddt, dbh, dch, da, dinit, *_shape_args(x, B, chunk_size), HAS_INIT=has_init, REVERSE=reverse,
            HAS_SEQ=seq is not None, **_config(x, B, C, chunk_size))
    per_group = (batch, length, groups, heads // groups, n)
    return dx, ddt, da.sum(0), dbh.view(per_group).sum(3), dch.view(per_group).sum(3), dinit


@ssd_bwd.register_fake
def _(dy, x, dt, A, B, C, seq, states, has_init, chunk_size, reverse):
    batch, length, heads, p = x.shape
    f32 = dict(dtype=torch.float32)
    return (x.new_empty(x.shape, **f32), x.new_empty(dt.shape, **f32), x.new_empty(A.shape, **f32),
            x.new_empty(B.shape, **f32), x.new_empty(C.shape, **f32),
            x.new_empty((batch, heads, p, B.shape[3]) if has_init else (0,), **f32))


def _setup_context(ctx, inputs, output):
    x, dt, A, B, C, initial_states, seq, chunk_size, reverse, _ = inputs
    ctx.save_for_backward(x, dt, A, B, C, seq, output[1])
    ctx.has_init, ctx.chunk_size, ctx.reverse = initial_states is not None, chunk_size, reverse


def _backward(ctx, dy, d_states, d_final):
    x, dt, A, B, C, seq, states = ctx.saved_tensors
    dx, ddt, dA, dB, dC, dinit = ssd_bwd(dy.float(), x, dt, A, B, C, seq, states, ctx.has_init, ctx.chunk_size,
                                         ctx.reverse)
    return (dx.to(x.dtype), ddt, dA, dB.to(B.dtype), dC.to(C.dtype), dinit if ctx.has_init else None, None, None,
            None, None)


ssd_fwd.register_autograd(_backward, setup_context=_setup_context)


def ssd_scan_triton(x, dt, A, B, C, initial_states, seq, reverse, chunk_states=False):
    """The SSD recurrence (without D and gate) on the Triton kernels, in CHUNK-step chunks: y (batch, L, H, P)
    float32, the final state (batch, H, P, N) float32, detached, and with `chunk_states` the state entering
    each chunk (batch, chunks, H, P, N), detached (else None). dt: the processed step (batch, L, H) float32;
    seq: sequence ids (batch, L) int32, nondecreasing in scan order, or None."""
    inputs = (x, dt, A, B, C, initial_states)
    save = chunk_states or (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs))
    y, states, final = ssd_fwd(x, dt, A.float(), B, C, None if initial_states is None else initial_states.float(),
                               seq, CHUNK, reverse, save)
    return y, final.detach(), states.detach() if chunk_states else None
