"""Fast PyTorch path of the Mamba-1 selective scan: a chunked scan with a hand-written backward.

With a = exp(delta A) and x = delta u B (both (L, batch, dim, N), time-major), the states solve the linear
recurrence h_t = a_t h_{t-1} + x_t. `scan_` solves it in place in chunks of about sqrt(L) steps: one loop
advances every chunk at once from a zero state, a recursive call carries each chunk's end state into the
next chunk (decay: the product of the chunk's decays), and a second loop adds that entering state, decayed
step by step, to the chunk. About 2 sqrt(L) loop iterations instead of L, each one in-place multiply-add;
only products of consecutive decays are formed, the numbers the recurrence itself multiplies.
`_Scan` runs it under a hand-written backward: the gradient of the states is the same recurrence run from
the last step to the first, so autograd records one node instead of a few per step, and the tensors of
size (L, batch, dim, N) are a, the states, their gradient and one product in the backward
(bench/s6_cpu.py times it against a per-step loop). The GPU path is the Triton kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import guard_int

from .._checks import compute_dtype

#: Chunks shorter than this are not worth their bookkeeping: L < MIN_CHUNK ** 2 runs one step at a time.
MIN_CHUNK = 4


def _step_(x: torch.Tensor, a: torch.Tensor, t: int, backward: bool) -> None:
    """One step of `scan_` at position t."""
    if backward:
        x[t].addcmul_(a[t + 1], x[t + 1])
    else:
        x[t].addcmul_(a[t], x[t - 1])


def scan_(x: torch.Tensor, a: torch.Tensor, backward: bool = False) -> torch.Tensor:
    """Solve a linear recurrence along dim 0 in place and return x; x, a: (L, *S), x contiguous.

    Forward: x_t <- a_t x_{t-1} + x_t for t = 1 .. L-1 (a_0 unused), the states of h_t = a_t h_{t-1} + x_t.
    backward=True: x_t <- a_{t+1} x_{t+1} + x_t for t = L-2 .. 0, the same recurrence's adjoint.
    """
    length = guard_int(x.shape[0])  # under torch.compile with dynamic shapes the chunking specialises
    steps = math.isqrt(length)
    if steps < MIN_CHUNK:
        for t in (range(length - 2, -1, -1) if backward else range(1, length)):
            _step_(x, a, t, backward)
        return x
    chunks = length // steps
    rest = length - chunks * steps
    # Chunks tile the steps taken first; the `rest` left over are finished one at a time at the end.
    region = slice(rest, None) if backward else slice(0, chunks * steps)
    xv = x[region].view((chunks, steps) + x.shape[1:])
    av = a[region].view(xv.shape)
    if backward:
        for j in range(steps - 2, -1, -1):
            xv[:, j].addcmul_(av[:, j + 1], xv[:, j + 1])
        # Chunk c's first state takes chunk c + 1's first state, decayed by a over (start_c, start_c+1].
        entering = xv[:, 0].clone()
        decay = av[:, 0].clone()
        decay[1:].mul_(av[:-1, 1:].prod(1))
        scan_(entering, decay, backward=True)
        carry = entering[1:] * av[1:, 0]
        for j in range(steps - 1, -1, -1):
            xv[:-1, j].add_(carry)
            if j:
                carry.mul_(av[:-1, j])
        tail = range(rest - 1, -1, -1)
    else:
        for j in range(1, steps):
            xv[:, j].addcmul_(av[:, j], xv[:, j - 1])
        entering = xv[:, -1].clone()  # each chunk's end state, then (after the scan) the true one
        scan_(entering, av.prod(1))
        carry = entering[:-1] * av[1:, 0]
        for j in range(steps):
            xv[1:, j].add_(carry)
            if j + 1 < steps:
                carry.mul_(av[1:, j + 1])
        tail = range(chunks * steps, length)
    for t in tail:
        _step_(x, a, t, backward)
    return x


class _Scan(torch.autograd.Function):
    """Time-major selective scan: y_t = <h_t, C_t>, h_t = exp(dt_t A) h_{t-1} + x_t B_t, h_{-1} = 0.

    dt, x: (L, batch, G, dim / G, 1); A: (G, dim / G, N); B, C: (L, batch, 1 or G, 1, N), or (1, 1, G, 1, N)
    when time-invariant.
    Returns y (L, batch, G, dim / G) and the last state (batch, G, dim / G, N).
    """

    @staticmethod
    def forward(ctx, dt, A, x, B, C):
        with torch.autocast(dt.device.type, enabled=False):  # the matmuls stay in the state's dtype
            shape = torch.broadcast_shapes(x.shape, B.shape, A.shape)
            a = torch.mul(dt, A, out=x.new_empty(shape)).exp_()  # contiguous, as scan_ needs
            h = scan_(torch.mul(x, B, out=x.new_empty(shape)), a)
            y = (h @ C.mT).squeeze(-1)
        ctx.save_for_backward(dt, A, x, B, C, a, h)
        return y, h[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dlast):
        dt, A, x, B, C, a, h = ctx.saved_tensors
        with torch.autocast(dy.device.type, enabled=False):
            dy = dy.to(h.dtype)
            dh = torch.mul(dy[..., None], C, out=h.new_empty(h.shape))
            dh[-1] += dlast
            scan_(dh, a, backward=True)
            dx = dh @ B.mT
            dB = (x.mT @ dh).sum_to_size(B.shape)
            dC = (dy[..., None, :] @ h).sum_to_size(C.shape)
            dlog = dh.mul_(a)  # d loss / d (dt A) = dh_t a_t h_{t-1}; dh's buffer is not needed any more
            dlog[1:].mul_(h[:-1])
            dlog[0].zero_()
            dA = (dlog * dt).sum((0, 1))
            return dlog.mul_(A).sum(-1, keepdim=True), dA, dx, dB, dC


def _time_major(BC: torch.Tensor, groups: int, dtype) -> torch.Tensor:
    """(batch, N, L) or (batch, G', N, L) -> (L, batch, G', 1, N), broadcastable over the channel groups;
    time-invariant (dim, N) (then groups = dim) -> (1, 1, dim, 1, N)."""
    if BC.dim() == 2:
        return BC.to(dtype)[None, None, :, None, :]
    if BC.dim() == 3:
        BC = BC[:, None]
    if BC.shape[1] not in (1, groups):  # B and C grouped differently: repeat into the finer grouping
        BC = BC.repeat_interleave(groups // BC.shape[1], dim=1)
    return BC.to(dtype).permute(3, 0, 1, 2)[:, :, :, None, :]


def selective_scan_fast(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False, reverse=False):
    """Same arguments, shapes and results as `selective_scan_ref`."""
    dtype = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    n = A.shape[1]
    # A time-invariant B or C is per channel: then every channel is its own group.
    groups = dim if 2 in (B.dim(), C.dim()) else math.lcm(*(1 if t.dim() == 3 else t.shape[1] for t in (B, C)))
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    # Time-major, channels split into (groups, channels per group): (L, batch, G, dim / G, 1).
    dt = dt.permute(2, 0, 1).reshape(length, batch, groups, dim // groups, 1)
    x = dt * u.to(dtype).permute(2, 0, 1).reshape(dt.shape)
    Bt, Ct = _time_major(B, groups, dtype), _time_major(C, groups, dtype)
    if reverse:
        dt, x, Bt, Ct = dt.flip(0), x.flip(0), Bt.flip(0), Ct.flip(0)
    y, h = _Scan.apply(dt, A.to(dtype).reshape(groups, dim // groups, n), x, Bt, Ct)
    if reverse:
        y = y.flip(0)
    y = y.permute(1, 2, 3, 0).reshape(batch, dim, length).contiguous()
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    out = y.to(u.dtype)
    if return_last_state:
        return out, h.reshape(batch, dim, n)
    return out
