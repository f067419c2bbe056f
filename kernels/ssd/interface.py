"""`mamba_chunk_scan_combined`: the checked, backend-dispatching entry point of the Mamba-2 SSD scan."""

from __future__ import annotations

import torch

from .._backend import HAS_TRITON, resolve_backend
from .._checks import check_groups, check_optional, check_pair, check_tensor, compute_dtype
from .chunked import mamba_chunk_scan_chunked
from .common import process_dt, skip_and_gate
from .varlen import check_seq_args, scan_segments, varlen_states

if HAS_TRITON:
    from .triton_op import CHUNK, fits, ssd_scan_triton


def check_ssd_args(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_limit):
    """Raise ValueError naming the first argument whose type, dtype, device, shape or value is wrong."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x: expected a tensor of shape (batch, L, H, P), got {type(x).__name__}")
    dev = x.device
    check_tensor("x", x, "(batch, L, H, P)", (None, None, None, None), dev)
    batch, length, heads, p = x.shape
    if length == 0:
        raise ValueError("x: the sequence length L must be at least 1, got 0")
    check_tensor("dt", dt, "(batch, L, H)", (batch, length, heads), dev)
    check_tensor("A", A, "(H,)", (heads,), dev)
    check_tensor("B", B, "(batch, L, G, N)", (batch, length, None, None), dev)
    check_groups("B", B.shape[2], heads, "H (x.shape[2])")
    check_pair(("B", "C"), B, C, "(batch, L, G, N)", dev)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    if isinstance(D, torch.Tensor) and D.dim() == 2:
        check_tensor("D", D, "(H, P)", (heads, p), dev)
    else:
        check_optional("D", D, "(H,) or (H, P)", (heads,), dev)
    check_optional("z", z, "(batch, L, H, P)", (batch, length, heads, p), dev)
    check_optional("dt_bias", dt_bias, "(H,)", (heads,), dev)
    check_optional("initial_states", initial_states, "(batch, H, P, N)", (batch, heads, p, B.shape[3]), dev)
    if len(dt_limit) != 2 or not 0.0 <= dt_limit[0] <= dt_limit[1]:
        raise ValueError(f"dt_limit: expected (low, high) with 0 <= low <= high, got {dt_limit!r}")


def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                              seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                              return_final_states=False, return_varlen_states=False, *, reverse=False,
                              backend="auto"):
    """Mamba-2 SSD scan, argument-compatible with mamba_ssm's `mamba_chunk_scan_combined`.

    x, z: (batch, L, H, P); dt: (batch, L, H); A, dt_bias: (H,); B, C: (batch, L, G, N) with G dividing H;
    D: (H,) or (H, P); initial_states: (batch, H, P, N). dt += dt_bias, softplus if `dt_softplus`, then
    clamped to `dt_limit`;  S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T,  out_t = (S_t C_t + D x_t) * silu(z_t).
    Any L (padded internally to a multiple of `chunk_size`). Out in x's dtype; state in float32.
    `return_final_states` also returns the final state (batch, H, P, N) (not differentiated through).
    `reverse=True` scans from the last position to the first (equal to flipping inputs and output);
    initial_states then enter at the last position.
    Packed variable-length sequences: `seq_idx` (batch, L) integer ids (a new sequence starts wherever the id
    changes; no state crosses a start; the initial state enters the first sequence), or `cu_seqlens`
    (num_seqs + 1,) boundaries along L (batch 1; seq_idx is derived from it, and must agree when both are
    given). `return_varlen_states` also returns each sequence's state after its last step, (num_seqs, H, P,
    N), not differentiated through; out stays differentiable. Returns out, then the final state if asked,
    then the varlen states if asked.
    `backend`: "torch" (chunked PyTorch path), "triton" (the Triton kernels: float16, bfloat16 or float32,
    P * N up to 8192; they scan in 32-step chunks whatever chunk_size says), or "auto" (Triton for CUDA
    tensors when it can take them). The result does not depend on chunk_size.
    """
    check_ssd_args(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_limit)
    seq_idx = check_seq_args(seq_idx, cu_seqlens, return_varlen_states, x.shape[0], x.shape[1], x.device)
    takes = not HAS_TRITON or fits(x.shape[3], B.shape[3])  # whether the kernels take these heads
    if backend == "triton" and not takes:
        raise ValueError(f"x: the Triton kernels take P * N up to 8192 (each padded to a power of two of at least "
                         f"16), got P={x.shape[3]}, N={B.shape[3]}; use backend='torch'")
    float64 = compute_dtype(x, dt, A, B, C, D, z, dt_bias, initial_states) == torch.float64
    if resolve_backend(backend, x, takes, float64) == "triton":
        step = process_dt(dt, dt_bias, dt_softplus, dt_limit, torch.float32)
        seq = None if seq_idx is None else scan_segments(seq_idx, reverse)
        y, final, entering = ssd_scan_triton(x, step, A, B, C, initial_states, seq, reverse, return_varlen_states)
        result = (skip_and_gate(y, x, D, z).to(x.dtype),) + ((final,) if return_final_states else ())
        if return_varlen_states:
            with torch.no_grad():
                result += (varlen_states(x.float(), step, A.float(), B.float(), cu_seqlens, entering[0], CHUNK,
                                         reverse),)
        return result if len(result) > 1 else result[0]
    out = mamba_chunk_scan_chunked(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, cu_seqlens,
                                   dt_softplus, dt_limit, return_final_states, return_varlen_states, reverse)
    if isinstance(out, tuple):
        return (out[0], *(t.detach() for t in out[1:]))
    return out

