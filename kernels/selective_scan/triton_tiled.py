"""Triton forward of the Mamba-1 selective scan for long channel-major sequences: L scanned in parallel.

The step kernels of `triton_kernels` walk L one step at a time, so a long scan's time is L times the latency
of one step. Here one program owns one channel of one sequence and takes BLOCK_T steps at a time, read
coalesced along L (the channel-major layout, (batch, dim, L) with unit stride along L, that mamba_ssm's
layers use): softplus, dt u and the gate are computed for the whole tile at once, then for each of the N
states the recurrence h_t = a_t h_{t-1} + b_t over the tile is one `tl.associative_scan` of the pairs
(a_t, b_t) = (exp(dt_t A_n), dt_t u_t B_{n,t}), with the state entering the tile folded into its first
step, and its output adds C_{n,t} h_t to y. This is the work split of mamba_ssm's CUDA kernel (threads hold
runs of consecutive steps; a block-wide scan joins them), and it reads each input once.

It writes what `s6_fwd_kernel` writes for one direction first-to-last, not split into segments: the output,
the state before every CHUNK steps for the backward (`Direction.states`), the last state. The backward is
`s6_bwd_kernel`'s. Steps past L (masked) have dt = 0, a pass-through, so the state after a tile's last
position is the state after its last valid step.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_kernels import _dt


@triton.jit
def _then(a1, b1, a2, b2):
    """The affine maps h -> a1 h + b1 and then h -> a2 h + b2, composed."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def s6_fwd_tiled_kernel(
    d, gate, out, last, sizes,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, GATE: tl.constexpr,
    SAVE_STATES: tl.constexpr, STORE_LAST: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """Grid (dim, batch). d: the `Direction` (not PROJ), scanned first to last; gate: the `Seq` of z (GATE);
    out: the output `Seq`; last: (batch, dim, N) float32 (STORE_LAST); sizes: the `Sizes`."""
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    dim, L, N, n_chunks = sizes.dim, sizes.L, sizes.N, sizes.n_chunks
    offs_t = tl.arange(0, BLOCK_T)
    offs_n = tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, CHUNK)
    u_ptr, su_t = d.u.ptr + pid_b * d.u.s_batch + pid_d * d.u.s_channel, d.u.s_step
    dl_ptr, sdl_t = d.delta.ptr + pid_b * d.delta.s_batch + pid_d * d.delta.s_channel, d.delta.s_step
    out_ptr, so_t = out.ptr + pid_b * out.s_batch + pid_d * out.s_channel, out.s_step
    if GATE:
        z_ptr, sz_t = gate.ptr + pid_b * gate.s_batch + pid_d * gate.s_channel, gate.s_step
    B_ptr = d.B.ptr + pid_b * d.B.s_batch + (pid_d // d.B.channels_per_group) * d.B.s_group
    C_ptr = d.C.ptr + pid_b * d.C.s_batch + (pid_d // d.C.channels_per_group) * d.C.s_group
    sB_n, sB_t, sC_n, sC_t = d.B.s_state, d.B.s_step, d.C.s_state, d.C.s_step
    A_ptr, sA_n = d.A.ptr + pid_d * d.A.s_channel, d.A.s_state
    bias = 0.0
    Dv = 0.0
    if HAS_BIAS:
        bias = tl.load(d.delta_bias + pid_d).to(tl.float32)
    if HAS_D:
        Dv = tl.load(d.D + pid_d).to(tl.float32)
    # states[b, k, n, d]: the state before step k * CHUNK; the one before step 0 is zero.
    states_ptr = d.states + pid_b * n_chunks * N * dim + pid_d
    if SAVE_STATES:
        tl.store(states_ptr + offs_n * dim, tl.zeros((BLOCK_N,), dtype=tl.float32), mask=offs_n < N)
    carry = tl.zeros((BLOCK_N,), dtype=tl.float32)  # the state entering the tile, one entry per state
    for t0 in range(0, L, BLOCK_T):
        t = t0 + offs_t
        valid = t < L
        u = tl.load(u_ptr + t * su_t, mask=valid, other=0.0).to(tl.float32)
        dl = tl.load(dl_ptr + t * sdl_t, mask=valid, other=0.0).to(tl.float32)
        dl, dt = _dt(dl, bias, valid, True, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        k_next = t0 // CHUNK + 1 + tl.arange(0, BLOCK_T // CHUNK)  # the chunk each run's end state starts
        save = (k_next < n_chunks) & (k_next * CHUNK <= L)
        y = tl.zeros((BLOCK_T,), dtype=tl.float32)
        B_n = tl.load(B_ptr + t * sB_t, mask=valid, other=0.0)
        C_n = tl.load(C_ptr + t * sC_t, mask=valid, other=0.0)
        for n in range(N):
            # The next state's B and C go out before this state's scan, which then hides their latency.
            Bt, Ct = B_n.to(tl.float32), C_n.to(tl.float32)
            more = valid & (n + 1 < N)
            B_n = tl.load(B_ptr + (n + 1) * sB_n + t * sB_t, mask=more, other=0.0)
            C_n = tl.load(C_ptr + (n + 1) * sC_n + t * sC_t, mask=more, other=0.0)
            a = tl.exp2(dt * (tl.load(A_ptr + n * sA_n).to(tl.float32) * 1.4426950408889634))
            h0 = tl.sum(tl.where(offs_n == n, carry, 0.0), axis=0)
            b = tl.where(offs_t == 0, a * h0, 0.0) + dtu * Bt
            _, h = tl.associative_scan((a, b), 0, _then)
            y += Ct * h
            if SAVE_STATES:  # the state after the last step of each CHUNK-step run of the tile
                ends = tl.sum(tl.where(offs_c[None, :] == CHUNK - 1, tl.reshape(h, (BLOCK_T // CHUNK, CHUNK)), 0.0), 1)
                tl.store(states_ptr + (k_next * N + n) * dim, ends, mask=save)
            carry = tl.where(offs_n == n, tl.sum(tl.where(offs_t == BLOCK_T - 1, h, 0.0), axis=0), carry)
        if HAS_D:
            y += Dv * u
        if GATE:
            z = tl.load(z_ptr + t * sz_t, mask=valid, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + t * so_t, y.to(out_ptr.dtype.element_ty), mask=valid)
    if STORE_LAST:
        tl.store(last + (pid_b * dim + pid_d) * N + offs_n, carry, mask=offs_n < N)


# Steps per tile and warps per program: 256 steps on one warp, 8 consecutive steps per thread (a 16-byte load of
# bf16), no exchange between warps; the fewest instructions per step and state among the tilings compiled for
# sm_90 by `bench/s6_sass.py --mixer long` at 90 registers (1024 steps on four warps: 25 % more per step, six
# barriers per state; 512 on one warp: 12 % fewer at 167 registers), and the fastest of them on an H100
# (`bench/s6_tiled.py`, BENCHMARKS.md).
TILE_STEPS, TILE_WARPS = 256, 1


def tiled_block(length: int, chunk: int) -> tuple[int, int]:
    """(BLOCK_T, num_warps) of a tiled forward over `length` steps saving a state every `chunk` (a power of 2):
    TILE_STEPS, fewer for a shorter scan, at least one chunk."""
    return min(TILE_STEPS, max(chunk, triton.next_power_of_2(length))), TILE_WARPS
