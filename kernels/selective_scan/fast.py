"""Fast PyTorch path of the Mamba-1 selective scan.

The decays and inputs of all steps are formed in two vectorised passes. When a step updates many state
elements (batch * dim * N >= `CHUNK_BELOW`), the recurrence advances one time-major (batch, dim, N) slice
per step: every step reads and writes contiguous, cache-sized memory and autograd stacks the per-step
gradients once, which on CPU beats any scheme that makes more passes over the whole (L, batch, dim, N)
tensor (a log-depth prefix scan was 10-40x slower). When a step is small, Python and autograd overhead
dominates such a loop, so the scan runs chunked (`linear_recurrence`): about L / chunks + chunks loop
iterations instead of L. bench/s6_cpu.py measures both on the same inputs; the GPU path is the Triton kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import guard_int

from .._checks import compute_dtype

#: Run chunked below this many state elements per step (bench/s6_cpu.py on a 2-core CPU: chunked is
#: 1.2-11x faster below it and no faster from 4096 up).
CHUNK_BELOW = 2048
#: State elements the chunked scan's inner loop updates per iteration (sets the number of chunks).
CHUNK_WORK = 131072


def _time_major(BC: torch.Tensor, groups: int, dtype) -> torch.Tensor:
    """(batch, N, L) or (batch, G', N, L) -> (L, batch, G', 1, N), broadcastable over the channel groups."""
    if BC.dim() == 3:
        BC = BC[:, None]
    if BC.shape[1] not in (1, groups):  # B and C grouped differently: repeat into the finer grouping
        BC = BC.repeat_interleave(groups // BC.shape[1], dim=1)
    return BC.to(dtype).permute(3, 0, 1, 2)[:, :, :, None, :]


def _pad_steps(x: torch.Tensor, steps: int) -> torch.Tensor:
    """Append `steps` zero steps along dim 0."""
    return torch.cat([x, x.new_zeros((steps,) + x.shape[1:])]) if steps else x


def linear_recurrence(log_decay: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
    """All states of h_t = exp(log_decay_t) * h_{t-1} + drive_t, h_{-1} = 0, along dim 0: (L, *S) -> (L, *S).

    Chunked in two levels: L is cut into chunks of T steps and one loop of T steps advances every chunk at
    once from a zero state; the state entering each chunk follows the same recurrence over chunks (decay:
    the chunk's summed log_decay, drive: its last local state), solved by a recursive call; each chunk then
    adds exp(cumsum of its log_decay) times its entering state. Only products of consecutive decays are
    formed, the same numbers the recurrence multiplies, so nothing overflows that the recurrence would not.
    """
    # Under torch.compile with dynamic shapes the chunking specialises on the sizes (guard_int).
    length, work = guard_int(drive.shape[0]), guard_int(drive[0].numel())
    chunks = min(length // 2, CHUNK_WORK // max(work, 1))
    if chunks < 2:
        h, states = torch.zeros_like(drive[0]), []
        for decay, x in zip(log_decay.exp().unbind(0), drive.unbind(0)):
            h = decay * h + x
            states.append(h)
        return torch.stack(states)
    steps = -(-length // chunks)
    chunks = -(-length // steps)
    pad = chunks * steps - length
    log_decay = _pad_steps(log_decay, pad).unflatten(0, (chunks, steps))  # (chunks, T, *S)
    drive = _pad_steps(drive, pad).unflatten(0, (chunks, steps))
    h, local = torch.zeros_like(drive[:, 0]), []
    for decay, x in zip(log_decay.exp().unbind(1), drive.unbind(1)):
        h = decay * h + x
        local.append(h)
    local = torch.stack(local, 1)
    cumulative = log_decay.cumsum(1)
    ends = linear_recurrence(cumulative[:, -1], local[:, -1])  # state after each chunk
    entering = torch.cat([torch.zeros_like(ends[:1]), ends[:-1]])[:, None]
    return (local + cumulative.exp() * entering).flatten(0, 1)[:length]


def selective_scan_fast(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False, reverse=False, *, chunked=None):
    """Same arguments, shapes and results as `selective_scan_ref`.

    `chunked`: scan with `linear_recurrence` (True) or one loop iteration per step (False); None chooses
    chunked when batch * dim * N < CHUNK_BELOW.
    """
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    n = A.shape[1]
    groups = math.lcm(*(1 if t.dim() == 3 else t.shape[1] for t in (B, C)))
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    # Time-major, channels split into (groups, channels per group): (L, batch, G, dim / G, 1).
    dt = dt.permute(2, 0, 1).reshape(length, batch, groups, dim // groups, 1)
    uf = u.to(dtype).permute(2, 0, 1).reshape(dt.shape)
    log_decay = dt * A.to(dtype).reshape(groups, dim // groups, n)  # (L, batch, G, dim / G, N)
    drive = (dt * uf) * _time_major(B, groups, dtype)
    Ct = _time_major(C, groups, dtype)
    if chunked is None:
        chunked = batch * dim * n < CHUNK_BELOW
    if chunked:
        if reverse:
            log_decay, drive, Ct = log_decay.flip(0), drive.flip(0), Ct.flip(0)
        states = linear_recurrence(log_decay, drive)
        y, h = (states * Ct).sum(-1), states[-1]  # y: (L, batch, G, dim / G)
        y = (y.flip(0) if reverse else y).permute(1, 2, 3, 0).contiguous()
    else:
        h = torch.zeros_like(drive[0])
        ys = [None] * length
        steps = range(length - 1, -1, -1) if reverse else range(length)
        decays, drives, Cs = torch.exp(log_decay).unbind(0), drive.unbind(0), Ct.unbind(0)
        for t in steps:
            h = decays[t] * h + drives[t]
            ys[t] = (h * Cs[t]).sum(-1)
        y = torch.stack(ys, dim=-1)
    y = y.reshape(batch, dim, length)
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    out = y.to(u.dtype)
    if return_last_state:
        return out, h.reshape(batch, dim, n)
    return out
