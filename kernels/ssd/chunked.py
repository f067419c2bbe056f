"""Fast PyTorch path of the Mamba-2 SSD scan: the chunked (state-space dual) algorithm.

Within a chunk of T steps the scan is a masked, decay-weighted (C B^T) product (quadratic in T, matrix
multiplies); chunks pass states along a short recurrence over L / T chunk boundaries. Any L: the tail
is padded with dt = 0 (no decay, no input), which leaves every real output and the final state as is.
Packed sequences (seq_idx) mask every term that would cross a sequence start: pairs of steps of different
sequences inside a chunk, and states carried past a start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import compute_dtype
from .common import process_dt, skip_and_gate
from .varlen import scan_segments, varlen_states


def _segsum_exp(cum: torch.Tensor) -> torch.Tensor:
    """cum (..., T) running sums -> (..., T, T) with [l, s] = exp(cum_l - cum_s) for s <= l, else 0.

    Masked before the exponential, so no inf (nor NaN gradient) arises above the diagonal.
    """
    seg = cum[..., :, None] - cum[..., None, :]
    size = cum.shape[-1]
    causal = torch.ones(size, size, dtype=torch.bool, device=cum.device).tril()
    return torch.exp(seg.masked_fill(~causal, float("-inf")))


def mamba_chunk_scan_chunked(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                             seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                             return_final_states=False, return_varlen_states=False, reverse=False):
    """Same arguments, shapes and results as `mamba_chunk_scan_ref`, plus `chunk_size` (T)."""
    dtype = compute_dtype(x, dt, A, B, C, D, z, dt_bias, initial_states)
    batch, length, heads, p = x.shape
    groups, n = B.shape[2], B.shape[3]
    hg = heads // groups
    step = process_dt(dt, dt_bias, dt_softplus, dt_limit, dtype)
    x_in, step_in, B_in = x.to(dtype), step, B.to(dtype)
    xf, Bf, Cf = x_in, B_in, C.to(dtype)
    # Sequence ids in scan order (nondecreasing), or None.
    seg = None if seq_idx is None else scan_segments(seq_idx, reverse)
    if reverse:
        step, xf, Bf, Cf = step.flip(1), xf.flip(1), Bf.flip(1), Cf.flip(1)
        seg = None if seg is None else seg.flip(1)
    pad = (-length) % chunk_size
    if pad:
        step = F.pad(step, (0, 0, 0, pad))
        xf, Bf, Cf = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (xf, Bf, Cf))
        seg = None if seg is None else torch.cat([seg, seg[:, -1:].expand(-1, pad)], 1)  # the last sequence's
    c, T = (length + pad) // chunk_size, chunk_size
    Bc = Bf.reshape(batch, c, T, groups, n)
    Cc = Cf.reshape(batch, c, T, groups, n)
    xdt = (xf * step[..., None]).reshape(batch, c, T, groups, hg, p)
    # Running log-decay inside each chunk, laid out (batch, groups, heads per group, chunk, T).
    cum = (step * A.to(dtype)).reshape(batch, c, T, groups, hg).permute(0, 3, 4, 1, 2).cumsum(-1)

    decay, to_end, from_start = _segsum_exp(cum), torch.exp(cum[..., -1:] - cum), torch.exp(cum)
    if seg is not None:
        # Masks over (batch, 1, 1, chunk, ...): the same sequence inside a chunk, the chunk's last sequence, the
        # sequence live at the chunk's start (at the point before each chunk: 0, then each chunk's last).
        segc = seg.reshape(batch, c, T)
        ends = F.pad(segc[..., -1], (1, 0))  # (batch, c + 1)
        decay = decay * (segc[..., :, None] == segc[..., None, :])[:, None, None]
        to_end = to_end * (segc == segc[..., -1:])[:, None, None]
        from_start = from_start * (segc == ends[:, :-1, None])[:, None, None]

    # 1. Outputs from inputs of the same chunk.
    scores = torch.einsum("bclgn,bcsgn->bgcls", Cc, Bc)[:, :, None] * decay
    y = torch.einsum("bghcls,bcsghp->bclghp", scores, xdt)

    # 2. Each chunk's own contribution to the state at its end.
    chunk_states = torch.einsum("bcsgn,bghcs,bcsghp->bcghpn", Bc, to_end, xdt)

    # 3. States entering each chunk: a recurrence over chunk boundaries, as one masked product.
    if initial_states is None:
        start = torch.zeros(batch, 1, groups, hg, p, n, dtype=dtype, device=x.device)
    else:
        start = initial_states.to(dtype).reshape(batch, 1, groups, hg, p, n)
    states = torch.cat([start, chunk_states], dim=1)  # (batch, c + 1, groups, hg, P, N)
    boundary = F.pad(cum[..., -1], (1, 0)).cumsum(-1)  # (batch, groups, hg, c + 1)
    carry = _segsum_exp(boundary)
    if seg is not None:  # a state reaches a later point only inside one sequence
        carry = carry * (ends[:, :, None] == ends[:, None, :])[:, None, None]
    states = torch.einsum("bghzc,bcghpn->bzghpn", carry, states)

    # 4. Outputs from the state entering the chunk.
    y = y + torch.einsum("bclgn,bcghpn,bghcl->bclghp", Cc, states[:, :-1], from_start)
    y = y.reshape(batch, c * T, heads, p)[:, :length]
    if reverse:
        y = y.flip(1)
    out = skip_and_gate(y, x, D, z).to(x.dtype)
    result = (out, states[:, -1].reshape(batch, heads, p, n)) if return_final_states else (out,)
    if return_varlen_states:
        entering = states[0, :-1].reshape(c, heads, p, n)
        result += (varlen_states(x_in, step_in, A.to(dtype), B_in, cu_seqlens, entering, T, reverse),)
    return result if len(result) > 1 else out
