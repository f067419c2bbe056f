"""Triton kernels of the Mamba-1 selective scan: forward and backward, one or two directions per launch.

One program owns BLOCK_D channels of one sequence and keeps their state in registers as an (N, BLOCK_D)
tile while it walks the L steps one at a time: each step loads u, delta, z of its channels and one column
of B and C, updates h = exp(delta A) h + delta u B, and writes <h, C> + D u gated by silu(z). The tile is
(N, BLOCK_D), channels last: a token-major step's inputs are contiguous runs of channels, and Triton lays
the tile out to load such runs with vector loads. At 32 channels on one warp each thread then holds 4
channels x 4 states (8 lanes across the channels, 4 across the states; `bench/s6_sass.py` prints the
layouts the compiler picks), so the per-step work that does not grow with the channels (B and C, loop
and address arithmetic) is shared by 32 of them. A is passed with its channels adjacent so that its load
takes the tile's layout. Measured on an H100
this beats a tiled log-depth scan (`tl.associative_scan`) at the lengths our models run (L up to a few
hundred): Triton spreads a tile's time axis over lanes, so the scan costs shuffles on every element,
while the step loop costs one exp2 and two FMAs per state and step. Every loop issues the next step's
loads before the current step's arithmetic, so their latency overlaps it. Inputs may have any strides; a
(batch, L, dim) tensor seen as (batch, dim, L) ("token-major", as a layer's projections produce it) gives
each step one contiguous run of channels, and the launcher then writes the outputs and gradients in that
layout too. COLS walks a row-major grid of H x W positions column by column (ViM2's vertical scan orders)
without a transposed copy. See BENCHMARKS.md for what bounds the loops.

The forward saves the state every CHUNK steps; the backward walks the chunks last to first, recomputes a
chunk's states from its saved start into a per-program float32 scratch (the (batch, dim, N, L) tensor is
never stored), then runs the adjoint g_t = C_t dy_t + a_next g_next back through the chunk. dB and dC sum
over the channels that share a group: each program reduces its BLOCK_D channels and adds its column to a
float32 buffer atomically. A fused bidirectional launch runs direction 0 first-to-last and direction 1
last-to-first in the same program; the second pass adds its output to the first one's before the gate,
so no flipped copy is made.

Long scans with too few programs to fill the GPU (batch x channel blocks) are cut into segments of the scan
order, a third grid axis: `s6_segment_states_kernel` first scans each segment but the last from a zero state
and keeps its end state and its sum of dt; each forward program then folds the earlier segments' summaries
into the state entering its own segment, h <- exp(A sum dt) h + h_j, and scans the segment. The backward
mirrors it with the adjoint (`s6_segment_adjoints_kernel`), folded from the later segments. The extra work
is about one scan without outputs per direction. A fused pair runs one launch per direction when split, since
direction 1's segment reads direction 0's output from other programs. The PROJ mode is not split.

PROJ (ViM2's channel mixer): delta, B and C are not read but computed from u itself. A program owns
BLOCK_D / E whole groups of E channels (one token's features each); per step and group r = <W_r, u_t>,
delta = w_dt r + bias, B_t = W_B u_t, C_t = W_C u_t with W = (W_r; W_B; W_C) of shape (1 + 2N, E), held on
each of the group's rows. The backward folds dB_t, dC_t and d(delta) into du and into per-channel sums of
the weights' gradients, so no per-step delta, B or C tensor exists in memory in either direction.
With CONV as well, u is the input of a causal depthwise conv (up to 4 taps, in scan order) and SiLU, both
computed in the loops from the last inputs kept in registers; the backward keeps each chunk's conv
outputs in its scratch beside the states and gives the conv's input gradient and weight sums.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softplus(x):
    # log1p(exp(x)) without a log1p: log(w) * y / (w - 1) corrects the rounding of w = 1 + y.
    y = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + y
    small = tl.where(w == 1.0, y, tl.log(w) * (y / (w - 1.0)))
    return tl.where(x > 20.0, x, small)


@triton.jit
def _group_sum(x, E: tl.constexpr, BLOCK_D: tl.constexpr):
    """x (K, BLOCK_D) summed over each group of E consecutive columns, the sum given back on every column of
    it."""
    K: tl.constexpr = x.shape[0]
    s = tl.sum(tl.reshape(x, (K, BLOCK_D // E, E)), axis=2, keep_dims=True)
    return tl.reshape(tl.broadcast_to(s, (K, BLOCK_D // E, E)), (K, BLOCK_D))


@triton.jit
def _group_sum_1d(x, E: tl.constexpr, BLOCK_D: tl.constexpr):
    """x (BLOCK_D,) summed over each group of E consecutive rows, the sum given back on every row of it."""
    s = tl.sum(tl.reshape(x, (BLOCK_D // E, E)), axis=1, keep_dims=True)
    return tl.reshape(tl.broadcast_to(s, (BLOCK_D // E, E)), (BLOCK_D,))


@triton.jit
def _param_rows(offs_d, PROJ: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr):
    """Rows of A, D and delta_bias for the program's channels: the channels, or with PROJ their place in
    their group."""
    if PROJ:
        rows = tl.arange(0, BLOCK_D) % E
    else:
        rows = offs_d
    return rows


@triton.jit
def _load_channel_params(bias_ptr, D_ptr, offs_d, mask_d, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr,
                         BLOCK_D: tl.constexpr):
    """delta_bias and D of BLOCK_D channels (zeros when absent), float32."""
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    Dv = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    return bias, Dv


@triton.jit
def _load_projection(Wx_ptr, wdt_ptr, N, offs_n, mask_n, PROJ: tl.constexpr, E: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """W_r, w_dt (BLOCK_D,) and W_B, W_C as (BLOCK_N, BLOCK_D) [state, channel] for each channel's place in
    its group, float32; zeros unless PROJ. Wx: contiguous (1 + 2N, E); wdt: (E,)."""
    offs_j = tl.arange(0, BLOCK_D) % E
    if PROJ:
        Wr = tl.load(Wx_ptr + offs_j).to(tl.float32)
        wdt = tl.load(wdt_ptr + offs_j).to(tl.float32)
        rows = (1 + offs_n[:, None]) * E + offs_j[None, :]
        WB = tl.load(Wx_ptr + rows, mask=mask_n[:, None], other=0.0).to(tl.float32)
        WC = tl.load(Wx_ptr + rows + N * E, mask=mask_n[:, None], other=0.0).to(tl.float32)
    else:
        Wr = tl.zeros((BLOCK_D,), dtype=tl.float32)
        wdt = tl.zeros((BLOCK_D,), dtype=tl.float32)
        WB = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
        WC = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    return Wr, wdt, WB, WC


@triton.jit
def _load_conv(cw_ptr, cb_ptr, offs_p, mask_d, CONV: tl.constexpr, BLOCK_D: tl.constexpr):
    """The conv's tap weights by lag (w0 multiplies this step's input, w3 the input three steps back) and
    bias, each (BLOCK_D,) float32 for each channel's place in its group; zeros unless CONV. cw: contiguous
    (E, 4); cb: (E,)."""
    w0 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    w1 = w0
    w2 = w0
    w3 = w0
    cb = w0
    if CONV:
        w0 = tl.load(cw_ptr + offs_p * 4, mask=mask_d, other=0.0)
        w1 = tl.load(cw_ptr + offs_p * 4 + 1, mask=mask_d, other=0.0)
        w2 = tl.load(cw_ptr + offs_p * 4 + 2, mask=mask_d, other=0.0)
        w3 = tl.load(cw_ptr + offs_p * 4 + 3, mask=mask_d, other=0.0)
        cb = tl.load(cb_ptr + offs_p, mask=mask_d, other=0.0)
    return w0, w1, w2, w3, cb


@triton.jit
def _load_input(u_ptr, su_t, i, L, H, mask_d, REVERSE: tl.constexpr, COLS: tl.constexpr):
    """u at step i of the scan order, float32, zero outside 0 <= i < L (the conv's zero padding)."""
    t = _step_position(i, L, H, REVERSE, COLS)
    return tl.load(u_ptr + t * su_t, mask=mask_d & (i >= 0) & (i < L), other=0.0).to(tl.float32)


@triton.jit
def _position(t, L, H, COLS: tl.constexpr):
    """Where step t of the scan order lies in memory: t, or with COLS the t-th token of a row-major grid of H
    rows walked column by column (down each column, left to right)."""
    if COLS:
        pos = (t % H) * (L // H) + t // H
    else:
        pos = t
    return pos


@triton.jit
def _step_position(i, L, H, REVERSE: tl.constexpr, COLS: tl.constexpr):
    """Memory position of the i-th step in scan order."""
    if REVERSE:
        t = L - 1 - i
    else:
        t = i
    return _position(t, L, H, COLS)


@triton.jit
def _load_step(u_ptr, su_t, dl_ptr, sdl_t, B_ptr, sB_t, t, mask_d, mask_n, valid, PROJ: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """The loads of step t, float32, zero where masked: u_t, and (unless PROJ, which projects them from u)
    delta_t before the bias and B_t as (BLOCK_N, 1). The loops issue them a step ahead of their use."""
    u = tl.load(u_ptr + t * su_t, mask=mask_d & valid, other=0.0).to(tl.float32)
    if PROJ:
        dl = u
        Bt = tl.zeros((BLOCK_N, 1), dtype=tl.float32)
    else:
        dl = tl.load(dl_ptr + t * sdl_t, mask=mask_d & valid, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + t * sB_t, mask=mask_n & valid, other=0.0).to(tl.float32)[:, None]
    return u, dl, Bt


@triton.jit
def _load_C(C_ptr, sC_t, t, mask_n, valid, PROJ: tl.constexpr, BLOCK_N: tl.constexpr):
    """C_t as (BLOCK_N, 1) float32 (zeros with PROJ)."""
    if PROJ:
        Ct = tl.zeros((BLOCK_N, 1), dtype=tl.float32)
    else:
        Ct = tl.load(C_ptr + t * sC_t, mask=mask_n & valid, other=0.0).to(tl.float32)[:, None]
    return Ct


@triton.jit
def _C_values(u, Ct, WC, PROJ: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr):
    """C_t: as loaded, or with PROJ W_C u_t of each channel's group, (BLOCK_N, BLOCK_D)."""
    if PROJ:
        Ct = _group_sum(u[None, :] * WC, E, BLOCK_D)
    return Ct


@triton.jit
def _step_values(u, dl, Bt, bias, Wr, wdt, WB, mask_d, valid, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                 PROJ: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr):
    """From `_load_step`'s values: delta before softplus, dt (0 on an invalid step: a pass-through), B_t (with
    PROJ W_B u_t of each channel's group) and r = <W_r, u_t> of each channel's group (0 unless PROJ)."""
    if PROJ:
        r = _group_sum_1d(u * Wr, E, BLOCK_D)
        dl = wdt * r
        Bt = _group_sum(u[None, :] * WB, E, BLOCK_D)
    else:
        r = 0.0
    if HAS_BIAS:
        dl += bias
    if SOFTPLUS:
        dt = _softplus(dl)
    else:
        dt = dl
    dt = tl.where(mask_d & valid, dt, 0.0)
    return dl, dt, Bt, r


@triton.jit
def _segment_summary(seg_ptr, pid_b, j, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn):
    """Segment j's summary in seg (batch, n_segs, N + 1, dim) float32: its (N, BLOCK_D) state (or adjoint) and
    its (BLOCK_D,) sum of dt."""
    base = seg_ptr + (pid_b * n_segs + j) * (N + 1) * dim
    x = tl.load(base + offs_n[:, None] * dim + offs_d[None, :], mask=mask_dn, other=0.0)
    dt_sum = tl.load(base + N * dim + offs_d, mask=mask_d, other=0.0)
    return x, dt_sum


@triton.jit
def _entering_state(seg_ptr, A2, pid_b, pid_s, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn,
                    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The state entering segment pid_s: the earlier segments' end states (each from a zero start) folded
    first to last, h <- exp(A sum dt) h + h_j, the decay over segment j being exp(A times its dt sum)."""
    h = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for j in range(pid_s):
        h_j, dt_sum = _segment_summary(seg_ptr, pid_b, j, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn)
        h = tl.exp2(dt_sum[None, :] * A2) * h + h_j
    return h


@triton.jit
def _entering_adjoint(seg_ptr, A2, pid_b, pid_s, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn,
                      BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """a g of the step after segment pid_s (what the adjoint of its last step receives from later steps): the
    later segments' a g at their first step (each from a zero adjoint at its end) folded last to first."""
    g = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for jj in range(n_segs - 1 - pid_s):
        g_j, dt_sum = _segment_summary(seg_ptr, pid_b, n_segs - 1 - jj, n_segs, dim, N, offs_d, offs_n, mask_d,
                                       mask_dn)
        g = tl.exp2(dt_sum[None, :] * A2) * g + g_j
    return g


@triton.jit
def _store_summary(seg_ptr, x, dt_sum, pid_b, j, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn):
    base = seg_ptr + (pid_b * n_segs + j) * (N + 1) * dim
    tl.store(base + offs_n[:, None] * dim + offs_d[None, :], x, mask=mask_dn)
    tl.store(base + N * dim + offs_d, dt_sum, mask=mask_d)


@triton.jit
def s6_segment_states_kernel(
    u_ptr, su_b, su_d, su_t,
    dl_ptr, sdl_b, sdl_d, sdl_t,
    A_ptr, sA_d, sA_n,
    B_ptr, sB_b, sB_g, sB_n, sB_t, B_dpg,
    bias_ptr, seg_ptr,
    dim, L, N, H, seg_len, n_segs,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, COLS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (cdiv(dim, BLOCK_D), batch, n_segs - 1): each segment but the last scanned from a zero state, its
    end state and dt sum written to seg (batch, n_segs, N + 1, dim) float32 for `_entering_state`."""
    pid_d, pid_b, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < dim, offs_n < N
    mask_dn = mask_d[None, :] & mask_n[:, None]
    A2 = tl.load(A_ptr + offs_d[None, :] * sA_d + offs_n[:, None] * sA_n, mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A2 * 1.4426950408889634
    bias, no_D = _load_channel_params(bias_ptr, bias_ptr, offs_d, mask_d, HAS_BIAS, False, BLOCK_D)
    B_ptr += pid_b * sB_b + ((pid_d * BLOCK_D) // B_dpg) * sB_g + offs_n * sB_n
    u_ptr += pid_b * su_b + offs_d * su_d
    dl_ptr += pid_b * sdl_b + offs_d * sdl_d
    h = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dt_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    i0 = pid_s * seg_len
    i1 = tl.minimum(L, i0 + seg_len)
    t_n = _step_position(i0, L, H, REVERSE, COLS)
    u_n, dl_n, B_n = _load_step(u_ptr, su_t, dl_ptr, sdl_t, B_ptr, sB_t, t_n, mask_d, mask_n, True, False, BLOCK_N)
    for i in range(i0, i1):
        u, dl, Bt = u_n, dl_n, B_n
        t_n = _step_position(i + 1, L, H, REVERSE, COLS)
        u_n, dl_n, B_n = _load_step(u_ptr, su_t, dl_ptr, sdl_t, B_ptr, sB_t, t_n, mask_d, mask_n, i + 1 < i1, False,
                                    BLOCK_N)
        dl, dt, Bt, r = _step_values(u, dl, Bt, bias, 0.0, 0.0, 0.0, mask_d, True, HAS_BIAS, SOFTPLUS, False, 1,
                                    BLOCK_D)
        h = tl.exp2(dt[None, :] * A2) * h + (dt * u)[None, :] * Bt
        dt_sum += dt
    _store_summary(seg_ptr, h, dt_sum, pid_b, pid_s, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn)


@triton.jit
def s6_segment_adjoints_kernel(
    dl_ptr, sdl_b, sdl_d, sdl_t,
    A_ptr, sA_d, sA_n,
    C_ptr, sC_b, sC_g, sC_n, sC_t, C_dpg,
    bias_ptr,
    z_ptr, sz_b, sz_d, sz_t,
    dout_ptr, sdo_b, sdo_d, sdo_t,
    seg_ptr,
    dim, L, N, H, seg_len, n_segs,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr,
    COLS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (cdiv(dim, BLOCK_D), batch, n_segs - 1): each segment but the first, its adjoint
    g_t = C_t dy_t + a_{t+1} g_{t+1} run last step to first from zero, a_first g_first and the dt sum written
    to seg (batch, n_segs, N + 1, dim) float32 for `_entering_adjoint`."""
    pid_d, pid_b, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2) + 1
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < dim, offs_n < N
    mask_dn = mask_d[None, :] & mask_n[:, None]
    A2 = tl.load(A_ptr + offs_d[None, :] * sA_d + offs_n[:, None] * sA_n, mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A2 * 1.4426950408889634
    bias, no_D = _load_channel_params(bias_ptr, bias_ptr, offs_d, mask_d, HAS_BIAS, False, BLOCK_D)
    C_ptr += pid_b * sC_b + ((pid_d * BLOCK_D) // C_dpg) * sC_g + offs_n * sC_n
    dl_ptr += pid_b * sdl_b + offs_d * sdl_d
    z_ptr += pid_b * sz_b + offs_d * sz_d
    dout_ptr += pid_b * sdo_b + offs_d * sdo_d
    g = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    a_next = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dt_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    i0 = pid_s * seg_len
    i1 = tl.minimum(L, i0 + seg_len)
    t_n = _step_position(i1 - 1, L, H, REVERSE, COLS)
    dl_n = tl.load(dl_ptr + t_n * sdl_t, mask=mask_d, other=0.0).to(tl.float32)
    C_n = _load_C(C_ptr, sC_t, t_n, mask_n, True, False, BLOCK_N)
    do_n = tl.load(dout_ptr + t_n * sdo_t, mask=mask_d, other=0.0).to(tl.float32)
    z_n = do_n
    if GATE:
        z_n = tl.load(z_ptr + t_n * sz_t, mask=mask_d, other=0.0).to(tl.float32)
    for k in range(i1 - i0):
        dl, Ct, dout, zt = dl_n, C_n, do_n, z_n
        more = k + 1 < i1 - i0
        t_n = _step_position(i1 - 2 - k, L, H, REVERSE, COLS)
        dl_n = tl.load(dl_ptr + t_n * sdl_t, mask=mask_d & more, other=0.0).to(tl.float32)
        C_n = _load_C(C_ptr, sC_t, t_n, mask_n, more, False, BLOCK_N)
        do_n = tl.load(dout_ptr + t_n * sdo_t, mask=mask_d & more, other=0.0).to(tl.float32)
        if GATE:
            z_n = tl.load(z_ptr + t_n * sz_t, mask=mask_d & more, other=0.0).to(tl.float32)
            dy = dout * zt * tl.sigmoid(zt)
        else:
            dy = dout
        dl, dt, Bt, r = _step_values(dl, dl, 0.0, bias, 0.0, 0.0, 0.0, mask_d, True, HAS_BIAS, SOFTPLUS, False, 1,
                                   BLOCK_D)
        g = a_next * g + Ct * dy[None, :]
        a_next = tl.exp2(dt[None, :] * A2)
        dt_sum += dt
    _store_summary(seg_ptr, a_next * g, dt_sum, pid_b, pid_s, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn)


@triton.jit
def _scan_fwd_direction(
    u_ptr, su_b, su_d, su_t,
    dl_ptr, sdl_b, sdl_d, sdl_t,
    A_ptr, sA_d, sA_n,
    B_ptr, sB_b, sB_g, sB_n, sB_t, B_dpg,
    C_ptr, sC_b, sC_g, sC_n, sC_t, C_dpg,
    D_ptr, bias_ptr, Wx_ptr, wdt_ptr, cw_ptr, cb_ptr,
    z_ptr, sz_b, sz_d, sz_t,
    out_ptr, so_b, so_d, so_t,
    last_ptr, states_ptr, seg_ptr,
    pid_b, pid_d, pid_s, dim, L, N, n_chunks, H, seg_len, n_segs,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, GATE: tl.constexpr,
    REVERSE: tl.constexpr, ACCUMULATE: tl.constexpr, SAVE_STATES: tl.constexpr, STORE_LAST: tl.constexpr,
    COLS: tl.constexpr, PROJ: tl.constexpr, CONV: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):
    """One direction's forward over the steps [pid_s * seg_len, (pid_s + 1) * seg_len) of the scan order
    (all of L when n_segs is 1). states: (batch, n_chunks, N, dim) float32, the state before each CHUNK
    steps in scan order; last: (batch, dim, N) float32, the state after the last step. seg: the earlier
    segments' summaries (`s6_segment_states_kernel`), from which the state entering this segment is folded.
    With PROJ, A, D and delta_bias are (E, ...): one row per place in a group; with CONV, u goes through the
    conv and SiLU first (neither is split into segments). With COLS the L = H * W positions are a row-major
    grid scanned column by column (`_position`); outputs go to the inputs' positions."""
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < dim, offs_n < N
    mask_dn = mask_d[None, :] & mask_n[:, None]
    offs_p = _param_rows(offs_d, PROJ, E, BLOCK_D)
    A2 = tl.load(A_ptr + offs_p[None, :] * sA_d + offs_n[:, None] * sA_n, mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A2 * 1.4426950408889634  # exp(dt A) = exp2(dt A log2 e)
    bias, Dv = _load_channel_params(bias_ptr, D_ptr, offs_p, mask_d, HAS_BIAS, HAS_D, BLOCK_D)
    Wr, wdt, WB, WC = _load_projection(Wx_ptr, wdt_ptr, N, offs_n, mask_n, PROJ, E, BLOCK_D, BLOCK_N)
    cw0, cw1, cw2, cw3, cb = _load_conv(cw_ptr, cb_ptr, offs_p, mask_d, CONV, BLOCK_D)
    # The conv's inputs one, two and three steps back. Each loop-carried value starts as its own tensor: the
    # compiler keeps a name whose value after the loop body is the very object it entered with out of the
    # loop's carried values, so `x3 = x2` with x2 and x3 both bound to one zeros tensor would not be carried.
    x1 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    x2 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    x3 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    # Without PROJ all BLOCK_D channels share one group of B and one of C (the launcher picks BLOCK_D so).
    B_ptr += pid_b * sB_b + ((pid_d * BLOCK_D) // B_dpg) * sB_g + offs_n * sB_n
    C_ptr += pid_b * sC_b + ((pid_d * BLOCK_D) // C_dpg) * sC_g + offs_n * sC_n
    u_ptr += pid_b * su_b + offs_d * su_d
    dl_ptr += pid_b * sdl_b + offs_d * sdl_d
    z_ptr += pid_b * sz_b + offs_d * sz_d
    out_ptr += pid_b * so_b + offs_d * so_d
    state_offs = (pid_b * n_chunks * N + offs_n[:, None]) * dim + offs_d[None, :]
    h = _entering_state(seg_ptr, A2, pid_b, pid_s, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn, BLOCK_D,
                        BLOCK_N)
    i0 = pid_s * seg_len
    i1 = tl.minimum(L, i0 + seg_len)
    t_n = _step_position(i0, L, H, REVERSE, COLS)
    u_n, dl_n, B_n = _load_step(u_ptr, su_t, dl_ptr, sdl_t, B_ptr, sB_t, t_n, mask_d, mask_n, True, PROJ, BLOCK_N)
    C_n = _load_C(C_ptr, sC_t, t_n, mask_n, True, PROJ, BLOCK_N)
    z_n = u_n
    o_n = u_n
    if GATE:
        z_n = tl.load(z_ptr + t_n * sz_t, mask=mask_d, other=0.0).to(tl.float32)
    if ACCUMULATE:
        o_n = tl.load(out_ptr + t_n * so_t, mask=mask_d, other=0.0).to(tl.float32)
    for i in range(i0, i1):
        t, u, dl, Bt, Ct, zt, acc = t_n, u_n, dl_n, B_n, C_n, z_n, o_n
        # The next step's loads go out before this step's arithmetic, which then hides their latency.
        more = i + 1 < i1
        t_n = _step_position(i + 1, L, H, REVERSE, COLS)
        u_n, dl_n, B_n = _load_step(u_ptr, su_t, dl_ptr, sdl_t, B_ptr, sB_t, t_n, mask_d, mask_n, more, PROJ, BLOCK_N)
        C_n = _load_C(C_ptr, sC_t, t_n, mask_n, more, PROJ, BLOCK_N)
        if GATE:
            z_n = tl.load(z_ptr + t_n * sz_t, mask=mask_d & more, other=0.0).to(tl.float32)
        if ACCUMULATE:
            o_n = tl.load(out_ptr + t_n * so_t, mask=mask_d & more, other=0.0).to(tl.float32)
        if SAVE_STATES:
            tl.store(states_ptr + state_offs + (i // CHUNK) * N * dim, h, mask=mask_dn & (i % CHUNK == 0))
        if CONV:
            pre = cb + cw0 * u + cw1 * x1 + cw2 * x2 + cw3 * x3
            x3 = x2
            x2 = x1
            x1 = u
            u = tl.where(mask_d, pre * tl.sigmoid(pre), 0.0)
        dl, dt, Bt, r = _step_values(u, dl, Bt, bias, Wr, wdt, WB, mask_d, True, HAS_BIAS, SOFTPLUS, PROJ, E, BLOCK_D)
        Ct = _C_values(u, Ct, WC, PROJ, E, BLOCK_D)
        h = tl.exp2(dt[None, :] * A2) * h + (dt * u)[None, :] * Bt
        y = tl.sum(h * Ct, axis=0)
        if HAS_D:
            y += Dv * u
        if ACCUMULATE:
            y += acc
        if GATE:
            y = y * zt * tl.sigmoid(zt)
        tl.store(out_ptr + t * so_t, y.to(out_ptr.dtype.element_ty), mask=mask_d)
    if STORE_LAST:
        tl.store(last_ptr + (pid_b * dim + offs_d[None, :]) * N + offs_n[:, None], h,
                 mask=mask_dn & (pid_s == n_segs - 1))


@triton.jit
def _scan_bwd_direction(
    u_ptr, su_b, su_d, su_t,
    dl_ptr, sdl_b, sdl_d, sdl_t,
    A_ptr, sA_d, sA_n,
    B_ptr, sB_b, sB_g, sB_n, sB_t, B_dpg,
    C_ptr, sC_b, sC_g, sC_n, sC_t, C_dpg,
    D_ptr, bias_ptr, Wx_ptr, wdt_ptr, cw_ptr, cb_ptr,
    z_ptr, sz_b, sz_d, sz_t,
    dout_ptr, sdo_b, sdo_d, sdo_t,
    states_ptr, seg_ptr, scratch_ptr,
    du_ptr, ddl_ptr, dz_ptr, dB_ptr, dB_g, dC_ptr, dC_g, dA_ptr, dD_ptr, dbias_ptr, dWx_ptr, dwdt_ptr, dcw_ptr,
    dcb_ptr,
    pid_b, pid_d, pid_s, dim, L, N, n_chunks, H, seg_len, n_segs,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, GATE: tl.constexpr,
    REVERSE: tl.constexpr, ACCUMULATE: tl.constexpr, COLS: tl.constexpr, TOKEN_MAJOR: tl.constexpr,
    PROJ: tl.constexpr, CONV: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """Gradients of one direction over segment pid_s of the scan order (see `_scan_fwd_direction`; seg: the
    later segments' adjoint summaries, `s6_segment_adjoints_kernel`). du, ddelta, dz: contiguous (batch, dim,
    L) in the inputs' dtypes, or with TOKEN_MAJOR contiguous (batch, L, dim); dB, dC: float32 (batch, groups,
    N, L) (TOKEN_MAJOR: (batch, groups, L, N)), added to atomically; dA (batch, n_segs, dim, N), dD and dbias
    (batch, n_segs, dim): float32 per-segment sums. With ACCUMULATE, dz already holds the other direction's
    part and this one is added to it. scratch: CHUNK * BLOCK_D * BLOCK_N float32 per program (with CONV
    CHUNK * BLOCK_D * (BLOCK_N + 1)). With PROJ (no ddelta, dB, dC): dWx (batch, dim, 1 + 2N) and dwdt
    (batch, dim) float32 per-channel sums of the projection weights' gradients. With CONV, du is the
    gradient of the conv's input, and dcw (batch, dim, 4) (by lag) and dcb (batch, dim) float32 per-channel
    sums of the conv's."""
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < dim, offs_n < N
    mask_dn = mask_d[None, :] & mask_n[:, None]
    offs_p = _param_rows(offs_d, PROJ, E, BLOCK_D)
    A = tl.load(A_ptr + offs_p[None, :] * sA_d + offs_n[:, None] * sA_n, mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634
    bias, Dv = _load_channel_params(bias_ptr, D_ptr, offs_p, mask_d, HAS_BIAS, HAS_D, BLOCK_D)
    Wr, wdt, WB, WC = _load_projection(Wx_ptr, wdt_ptr, N, offs_n, mask_n, PROJ, E, BLOCK_D, BLOCK_N)
    cw0, cw1, cw2, cw3, cb = _load_conv(cw_ptr, cb_ptr, offs_p, mask_d, CONV, BLOCK_D)
    group_B = (pid_d * BLOCK_D) // B_dpg
    group_C = (pid_d * BLOCK_D) // C_dpg
    B_ptr += pid_b * sB_b + group_B * sB_g + offs_n * sB_n
    C_ptr += pid_b * sC_b + group_C * sC_g + offs_n * sC_n
    if TOKEN_MAJOR:  # position t of the gradients: + t * grad_t, of dB and dC: + t * dbc_t
        grad_offs, grad_t, dbc_n, dbc_t = pid_b * dim * L + offs_d, dim, 1, N
    else:
        grad_offs, grad_t, dbc_n, dbc_t = (pid_b * dim + offs_d) * L, 1, L, 1
    dB_ptr += (pid_b * dB_g + group_B) * N * L + offs_n * dbc_n
    dC_ptr += (pid_b * dC_g + group_C) * N * L + offs_n * dbc_n
    u_ptr += pid_b * su_b + offs_d * su_d
    dl_ptr += pid_b * sdl_b + offs_d * sdl_d
    z_ptr += pid_b * sz_b + offs_d * sz_d
    dout_ptr += pid_b * sdo_b + offs_d * sdo_d
    state_offs = (pid_b * n_chunks * N + offs_n[:, None]) * dim + offs_d[None, :]
    row = pid_b * n_segs + pid_s  # of the per-segment sums and the scratch
    base = (row * tl.num_programs(0) + pid_d) * CHUNK * BLOCK_D
    if CONV:  # the chunk's conv outputs (before SiLU) follow its states
        base = base * (BLOCK_N + 1)
        pre_ptr = scratch_ptr + base + CHUNK * BLOCK_D * BLOCK_N + tl.arange(0, BLOCK_D)
    else:
        base = base * BLOCK_N
        pre_ptr = scratch_ptr
    scratch_ptr += base + offs_n[:, None] * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
    # The first update g = a_next g + C dy takes what the later segments pass in (a_next = 1).
    g = _entering_adjoint(seg_ptr, A2, pid_b, pid_s, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn, BLOCK_D,
                          BLOCK_N)
    a_next = tl.full((BLOCK_N, BLOCK_D), 1.0, dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dWr_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dwdt_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dWB_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dWC_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    # The conv's inputs one, two and three steps back, and its outputs' gradients one, two and three steps
    # ahead: each its own tensor (see `_scan_fwd_direction`).
    x1 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    x2 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    x3 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    p1 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    p2 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    p3 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dcw0_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dcw1_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dcw2_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dcw3_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dcb_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    c0 = (pid_s * seg_len) // CHUNK
    c1 = tl.minimum(n_chunks, c0 + seg_len // CHUNK)
    for j in range(c1 - c0):
        c = c1 - 1 - j
        # Recompute the chunk's states from the one saved at its start (loads issued a step ahead).
        h = tl.load(states_ptr + state_offs + c * N * dim, mask=mask_dn, other=0.0)
        if CONV:
            x1 = _load_input(u_ptr, su_t, c * CHUNK - 1, L, H, mask_d, REVERSE, COLS)
            x2 = _load_input(u_ptr, su_t, c * CHUNK - 2, L, H, mask_d, REVERSE, COLS)
            x3 = _load_input(u_ptr, su_t, c * CHUNK - 3, L, H, mask_d, REVERSE, COLS)
        t_n = _step_position(c * CHUNK, L, H, REVERSE, COLS)
        u_n, dl_n, B_n = _load_step(u_ptr, su_t, dl_ptr, sdl_t, B_ptr, sB_t, t_n, mask_d, mask_n, c * CHUNK < L, PROJ,
                                    BLOCK_N)
        for k in range(CHUNK):
            i = c * CHUNK + k
            u, dl, Bt = u_n, dl_n, B_n
            t_n = _step_position(i + 1, L, H, REVERSE, COLS)
            u_n, dl_n, B_n = _load_step(u_ptr, su_t, dl_ptr, sdl_t, B_ptr, sB_t, t_n, mask_d, mask_n,
                                        (k + 1 < CHUNK) & (i + 1 < L), PROJ, BLOCK_N)
            if CONV:
                pre = cb + cw0 * u + cw1 * x1 + cw2 * x2 + cw3 * x3
                x3 = x2
                x2 = x1
                x1 = u
                tl.store(pre_ptr + k * BLOCK_D, pre)
                u = tl.where(mask_d, pre * tl.sigmoid(pre), 0.0)
            dl, dt, Bt, r = _step_values(u, dl, Bt, bias, Wr, wdt, WB, mask_d, i < L, HAS_BIAS, SOFTPLUS, PROJ, E,
                                         BLOCK_D)
            h = tl.exp2(dt[None, :] * A2) * h + (dt * u)[None, :] * Bt
            tl.store(scratch_ptr + k * BLOCK_D * BLOCK_N, h)
        tl.debug_barrier()
        # Back through the chunk, last step first, again loading a step ahead. dA, dD and d(delta_bias) sum the
        # chunk's terms first, then add that sum: a two-level sum keeps their rounding error from growing with L.
        dA_chunk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
        dD_chunk = tl.zeros((BLOCK_D,), dtype=tl.float32)
        dbias_chunk = tl.zeros((BLOCK_D,), dtype=tl.float32)
        i_n = c * CHUNK + CHUNK - 1
        t_n = _step_position(i_n, L, H, REVERSE, COLS)
        u_n, dl_n, B_n = _load_step(u_ptr, su_t, dl_ptr, sdl_t, B_ptr, sB_t, t_n, mask_d, mask_n, i_n < L, PROJ,
                                    BLOCK_N)
        C_n = _load_C(C_ptr, sC_t, t_n, mask_n, i_n < L, PROJ, BLOCK_N)
        do_n = tl.load(dout_ptr + t_n * sdo_t, mask=mask_d & (i_n < L), other=0.0).to(tl.float32)
        h_n = tl.load(scratch_ptr + (CHUNK - 1) * BLOCK_D * BLOCK_N)
        pre_n = u_n
        if CONV:
            pre_n = tl.load(pre_ptr + (CHUNK - 1) * BLOCK_D)
        z_n = u_n
        dz_n = u_n
        if GATE:
            z_n = tl.load(z_ptr + t_n * sz_t, mask=mask_d & (i_n < L), other=0.0).to(tl.float32)
            if ACCUMULATE:
                dz_n = tl.load(dz_ptr + grad_offs + t_n * grad_t, mask=mask_d & (i_n < L), other=0.0).to(tl.float32)
        for kk in range(CHUNK):
            k = CHUNK - 1 - kk
            i = c * CHUNK + k
            valid = i < L
            t, u, dl, Bt, Ct, dout, h, zt, dz_prev, pre = t_n, u_n, dl_n, B_n, C_n, do_n, h_n, z_n, dz_n, pre_n
            i_n = i - 1
            more = (kk + 1 < CHUNK) & (i_n < L)
            t_n = _step_position(i_n, L, H, REVERSE, COLS)
            u_n, dl_n, B_n = _load_step(u_ptr, su_t, dl_ptr, sdl_t, B_ptr, sB_t, t_n, mask_d, mask_n, more, PROJ,
                                        BLOCK_N)
            C_n = _load_C(C_ptr, sC_t, t_n, mask_n, more, PROJ, BLOCK_N)
            do_n = tl.load(dout_ptr + t_n * sdo_t, mask=mask_d & more, other=0.0).to(tl.float32)
            h_n = tl.load(scratch_ptr + (k - 1) * BLOCK_D * BLOCK_N, mask=mask_dn & more, other=0.0)
            x = u
            sp = u
            if CONV:
                pre_n = tl.load(pre_ptr + (k - 1) * BLOCK_D, mask=mask_d & more, other=0.0)
                sp = tl.sigmoid(pre)
                u = tl.where(mask_d, pre * sp, 0.0)
            if GATE:
                z_n = tl.load(z_ptr + t_n * sz_t, mask=mask_d & more, other=0.0).to(tl.float32)
                if ACCUMULATE:
                    dz_n = tl.load(dz_ptr + grad_offs + t_n * grad_t, mask=mask_d & more, other=0.0).to(tl.float32)
            dl, dt, Bt, r = _step_values(u, dl, Bt, bias, Wr, wdt, WB, mask_d, valid, HAS_BIAS, SOFTPLUS, PROJ, E,
                                         BLOCK_D)
            Ct = _C_values(u, Ct, WC, PROJ, E, BLOCK_D)
            if GATE:
                sig = tl.sigmoid(zt)
                y = tl.sum(h * Ct, axis=0)
                if HAS_D:
                    y += Dv * u
                dz = dout * y * sig * (1.0 + zt * (1.0 - sig))
                if ACCUMULATE:
                    dz += dz_prev
                tl.store(dz_ptr + grad_offs + t * grad_t, dz.to(dz_ptr.dtype.element_ty), mask=mask_d & valid)
                dy = dout * zt * sig
            else:
                dy = dout
            # Adjoint: g_t = C_t dy_t + a_next g_next, with a_next the decay of the step after t in scan order.
            g = a_next * g + Ct * dy[None, :]
            a = tl.exp2(dt[None, :] * A2)
            a_next = a
            dtu = dt * u
            # d(dt A)_t = g_t a_t h_{t-1} = g_t (h_t - dt_t u_t B_t).
            ddA = g * (h - dtu[None, :] * Bt)
            dA_chunk += ddA * dt[None, :]
            gB = tl.sum(g * Bt, axis=0)
            ddt = tl.sum(ddA * A, axis=0) + gB * u
            du = gB * dt
            if HAS_D:
                du += Dv * dy
                dD_chunk += dy * u
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(dl)
            ddt = tl.where(mask_d & valid, ddt, 0.0)
            dbias_chunk += ddt
            if PROJ:  # back through delta = w_dt <W_r, u> + bias, B = W_B u, C = W_C u, per group
                dBt = _group_sum(g * dtu[None, :], E, BLOCK_D)
                dCt = _group_sum(h * dy[None, :], E, BLOCK_D)
                dr = _group_sum_1d(ddt * wdt, E, BLOCK_D)
                du += tl.sum(WB * dBt, axis=0) + tl.sum(WC * dCt, axis=0) + dr * Wr
                dWr_acc += dr * u
                dwdt_acc += ddt * r
                dWB_acc += u[None, :] * dBt
                dWC_acc += u[None, :] * dCt
            else:
                dBt = tl.sum(g * dtu[None, :], axis=1)
                dCt = tl.sum(h * dy[None, :], axis=1)
                tl.store(ddl_ptr + grad_offs + t * grad_t, ddt.to(ddl_ptr.dtype.element_ty), mask=mask_d & valid)
                tl.atomic_add(dB_ptr + t * dbc_t, dBt, mask=mask_n & valid, sem="relaxed")
                tl.atomic_add(dC_ptr + t * dbc_t, dCt, mask=mask_n & valid, sem="relaxed")
            if CONV:  # back through u = silu(pre), pre_i = cb + sum_k w_k x_{i-k}
                dpre = du * sp * (1.0 + pre * (1.0 - sp))
                dcw0_acc += dpre * x
                dcw1_acc += p1 * x
                dcw2_acc += p2 * x
                dcw3_acc += p3 * x
                dcb_acc += dpre
                du = cw0 * dpre + cw1 * p1 + cw2 * p2 + cw3 * p3
                p3 = p2
                p2 = p1
                p1 = dpre
            tl.store(du_ptr + grad_offs + t * grad_t, du.to(du_ptr.dtype.element_ty), mask=mask_d & valid)
        dA_acc += dA_chunk
        dD_acc += dD_chunk
        dbias_acc += dbias_chunk
        tl.debug_barrier()
    tl.store(dA_ptr + (row * dim + offs_d[None, :]) * N + offs_n[:, None], dA_acc, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + row * dim + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + row * dim + offs_d, dbias_acc, mask=mask_d)
    if PROJ:
        w_offs = (row * dim + offs_d) * (1 + 2 * N)
        tl.store(dWx_ptr + w_offs, dWr_acc, mask=mask_d)
        tl.store(dWx_ptr + w_offs[None, :] + 1 + offs_n[:, None], dWB_acc, mask=mask_dn)
        tl.store(dWx_ptr + w_offs[None, :] + 1 + N + offs_n[:, None], dWC_acc, mask=mask_dn)
        tl.store(dwdt_ptr + row * dim + offs_d, dwdt_acc, mask=mask_d)
    if CONV:
        c_offs = (row * dim + offs_d) * 4
        tl.store(dcw_ptr + c_offs, dcw0_acc, mask=mask_d)
        tl.store(dcw_ptr + c_offs + 1, dcw1_acc, mask=mask_d)
        tl.store(dcw_ptr + c_offs + 2, dcw2_acc, mask=mask_d)
        tl.store(dcw_ptr + c_offs + 3, dcw3_acc, mask=mask_d)
        tl.store(dcb_ptr + row * dim + offs_d, dcb_acc, mask=mask_d)


@triton.jit
def s6_fwd_kernel(
    u0, su0_b, su0_d, su0_t, dl0, sdl0_b, sdl0_d, sdl0_t, A0, sA0_d, sA0_n,
    B0, sB0_b, sB0_g, sB0_n, sB0_t, B0_dpg, C0, sC0_b, sC0_g, sC0_n, sC0_t, C0_dpg, D0, bias0, Wx0, wdt0,
    cw0, cb0, states0, seg0,
    u1, su1_b, su1_d, su1_t, dl1, sdl1_b, sdl1_d, sdl1_t, A1, sA1_d, sA1_n,
    B1, sB1_b, sB1_g, sB1_n, sB1_t, B1_dpg, C1, sC1_b, sC1_g, sC1_n, sC1_t, C1_dpg, D1, bias1, Wx1, wdt1,
    cw1, cb1, states1, seg1,
    z, sz_b, sz_d, sz_t, out, so_b, so_d, so_t, last,
    dim, L, N, n_chunks, H, seg_len, n_segs,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr,
    REVERSE: tl.constexpr, BIDIR: tl.constexpr, RUN0: tl.constexpr, RUN1: tl.constexpr, SAVE_STATES: tl.constexpr,
    COLS: tl.constexpr, PROJ: tl.constexpr, CONV: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):
    """Grid (cdiv(dim, BLOCK_D), batch, n_segs). Direction 0 scans in the order REVERSE says; with BIDIR,
    direction 1 then scans last-to-first and adds its output before the gate. RUN0 / RUN1: which of the two
    this launch runs (a pair split into segments runs them in two launches: direction 1 reads all of
    direction 0's output)."""
    pid_d, pid_b, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if RUN0:
        _scan_fwd_direction(u0, su0_b, su0_d, su0_t, dl0, sdl0_b, sdl0_d, sdl0_t, A0, sA0_d, sA0_n,
                            B0, sB0_b, sB0_g, sB0_n, sB0_t, B0_dpg, C0, sC0_b, sC0_g, sC0_n, sC0_t, C0_dpg, D0,
                            bias0, Wx0, wdt0, cw0, cb0, z, sz_b, sz_d, sz_t, out, so_b, so_d, so_t, last, states0,
                            seg0, pid_b, pid_d, pid_s, dim, L, N, n_chunks, H, seg_len, n_segs,
                            HAS_D, HAS_BIAS, SOFTPLUS, HAS_Z and not BIDIR, REVERSE, False, SAVE_STATES, not BIDIR,
                            COLS, PROJ, CONV, E, BLOCK_D, BLOCK_N, CHUNK)
    if RUN0 and RUN1:
        tl.debug_barrier()  # direction 1 reads the outputs this program's threads just wrote
    if RUN1:
        _scan_fwd_direction(u1, su1_b, su1_d, su1_t, dl1, sdl1_b, sdl1_d, sdl1_t, A1, sA1_d, sA1_n,
                            B1, sB1_b, sB1_g, sB1_n, sB1_t, B1_dpg, C1, sC1_b, sC1_g, sC1_n, sC1_t, C1_dpg, D1,
                            bias1, Wx1, wdt1, cw1, cb1, z, sz_b, sz_d, sz_t, out, so_b, so_d, so_t, last, states1,
                            seg1, pid_b, pid_d, pid_s, dim, L, N, n_chunks, H, seg_len, n_segs,
                            HAS_D, HAS_BIAS, SOFTPLUS, HAS_Z, True, True, SAVE_STATES, False,
                            COLS, PROJ, CONV, E, BLOCK_D, BLOCK_N, CHUNK)


@triton.jit
def s6_bwd_kernel(
    u0, su0_b, su0_d, su0_t, dl0, sdl0_b, sdl0_d, sdl0_t, A0, sA0_d, sA0_n,
    B0, sB0_b, sB0_g, sB0_n, sB0_t, B0_dpg, C0, sC0_b, sC0_g, sC0_n, sC0_t, C0_dpg, D0, bias0, Wx0, wdt0,
    cw0, cb0, states0, seg0,
    du0, ddl0, dB0, dB0_g, dC0, dC0_g, dA0, dD0, dbias0, dWx0, dwdt0, dcw0, dcb0,
    u1, su1_b, su1_d, su1_t, dl1, sdl1_b, sdl1_d, sdl1_t, A1, sA1_d, sA1_n,
    B1, sB1_b, sB1_g, sB1_n, sB1_t, B1_dpg, C1, sC1_b, sC1_g, sC1_n, sC1_t, C1_dpg, D1, bias1, Wx1, wdt1,
    cw1, cb1, states1, seg1,
    du1, ddl1, dB1, dB1_g, dC1, dC1_g, dA1, dD1, dbias1, dWx1, dwdt1, dcw1, dcb1,
    z, sz_b, sz_d, sz_t, dout, sdo_b, sdo_d, sdo_t, dz, scratch,
    dim, L, N, n_chunks, H, seg_len, n_segs,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr,
    REVERSE: tl.constexpr, RUN0: tl.constexpr, RUN1: tl.constexpr, COLS: tl.constexpr, TOKEN_MAJOR: tl.constexpr,
    PROJ: tl.constexpr, CONV: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """Grid (cdiv(dim, BLOCK_D), batch, n_segs); the gradients of `s6_fwd_kernel`, direction by direction
    (RUN0 / RUN1 as there; direction 1 adds its part of dz to direction 0's)."""
    pid_d, pid_b, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if RUN0:
        _scan_bwd_direction(u0, su0_b, su0_d, su0_t, dl0, sdl0_b, sdl0_d, sdl0_t, A0, sA0_d, sA0_n,
                            B0, sB0_b, sB0_g, sB0_n, sB0_t, B0_dpg, C0, sC0_b, sC0_g, sC0_n, sC0_t, C0_dpg, D0,
                            bias0, Wx0, wdt0, cw0, cb0, z, sz_b, sz_d, sz_t, dout, sdo_b, sdo_d, sdo_t, states0,
                            seg0, scratch, du0, ddl0, dz, dB0, dB0_g, dC0, dC0_g, dA0, dD0, dbias0, dWx0, dwdt0,
                            dcw0, dcb0, pid_b, pid_d, pid_s, dim, L, N, n_chunks, H, seg_len, n_segs,
                            HAS_D, HAS_BIAS, SOFTPLUS, HAS_Z, REVERSE, False, COLS, TOKEN_MAJOR, PROJ, CONV, E,
                            BLOCK_D, BLOCK_N, CHUNK)
    if RUN0 and RUN1:
        tl.debug_barrier()  # direction 1 adds its part to the dz this program's threads just wrote
    if RUN1:
        _scan_bwd_direction(u1, su1_b, su1_d, su1_t, dl1, sdl1_b, sdl1_d, sdl1_t, A1, sA1_d, sA1_n,
                            B1, sB1_b, sB1_g, sB1_n, sB1_t, B1_dpg, C1, sC1_b, sC1_g, sC1_n, sC1_t, C1_dpg, D1,
                            bias1, Wx1, wdt1, cw1, cb1, z, sz_b, sz_d, sz_t, dout, sdo_b, sdo_d, sdo_t, states1,
                            seg1, scratch, du1, ddl1, dz, dB1, dB1_g, dC1, dC1_g, dA1, dD1, dbias1, dWx1, dwdt1,
                            dcw1, dcb1, pid_b, pid_d, pid_s, dim, L, N, n_chunks, H, seg_len, n_segs,
                            HAS_D, HAS_BIAS, SOFTPLUS, HAS_Z, True, True, COLS, TOKEN_MAJOR, PROJ, CONV, E,
                            BLOCK_D, BLOCK_N, CHUNK)
