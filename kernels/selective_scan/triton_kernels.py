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

Arguments come in the named groups of `triton_args` (a `Direction` per direction, its `Gradients`, `Seq`s for
the gate, output and dout, the `Sizes`), then the meta-parameters. Each function reads the fields it needs
into locals before its loops: Triton 3.6 loses a tuple argument's constant fields (a stride of 1) inside a
loop.
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


# The program: its channels, parameters and base pointers, read once before the loops.


@triton.jit
def _tile(pid_d, dim, N, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The program's BLOCK_D channels and BLOCK_N states: offsets, masks, and the mask of an (N, BLOCK_D) tile."""
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < dim, offs_n < N
    return offs_d, offs_n, mask_d, mask_n, mask_d[None, :] & mask_n[:, None]


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
def _load_A(A, rows, offs_n, mask_dn):
    """A (`StateMatrix`) of the rows as an (N, BLOCK_D) float32 tile, and A log2(e): exp(dt A) = exp2(dt A log2 e)."""
    a = tl.load(A.ptr + rows[None, :] * A.s_channel + offs_n[:, None] * A.s_state, mask=mask_dn, other=0.0)
    a = a.to(tl.float32)
    return a, a * 1.4426950408889634


@triton.jit
def _load_channel_params(d, rows, mask_d, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, BLOCK_D: tl.constexpr):
    """delta_bias and D of the rows (zeros when absent), float32."""
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    Dv = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(d.delta_bias + rows, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(d.D + rows, mask=mask_d, other=0.0).to(tl.float32)
    return bias, Dv


@triton.jit
def _load_projection(proj, N, offs_n, mask_n, E: tl.constexpr, BLOCK_D: tl.constexpr):
    """W_r, w_dt (BLOCK_D,) and W_B, W_C as (BLOCK_N, BLOCK_D) [state, channel] for each channel's place in its
    group, float32, from a `Projection`."""
    offs_j = tl.arange(0, BLOCK_D) % E
    Wr = tl.load(proj.Wx + offs_j).to(tl.float32)
    wdt = tl.load(proj.w_dt + offs_j).to(tl.float32)
    rows = (1 + offs_n[:, None]) * E + offs_j[None, :]
    WB = tl.load(proj.Wx + rows, mask=mask_n[:, None], other=0.0).to(tl.float32)
    WC = tl.load(proj.Wx + rows + N * E, mask=mask_n[:, None], other=0.0).to(tl.float32)
    return Wr, wdt, WB, WC


@triton.jit
def _load_conv(proj, rows, mask_d):
    """The conv's tap weights by lag (w0 multiplies this step's input, w3 the input three steps back) and bias,
    each (BLOCK_D,) float32, from a `Projection`."""
    w0 = tl.load(proj.conv_weight + rows * 4, mask=mask_d, other=0.0)
    w1 = tl.load(proj.conv_weight + rows * 4 + 1, mask=mask_d, other=0.0)
    w2 = tl.load(proj.conv_weight + rows * 4 + 2, mask=mask_d, other=0.0)
    w3 = tl.load(proj.conv_weight + rows * 4 + 3, mask=mask_d, other=0.0)
    cb = tl.load(proj.conv_bias + rows, mask=mask_d, other=0.0)
    return w0, w1, w2, w3, cb


@triton.jit
def _seq_ptrs(s, pid_b, offs_d):
    """Pointers to position 0 of the program's channels in batch row pid_b of a `Seq`."""
    return s.ptr + (pid_b * s.s_batch + offs_d * s.s_channel)


@triton.jit
def _group(g, pid_d, BLOCK_D: tl.constexpr):
    """The group of a `GroupedSeq` that serves the program's channels (the launcher picks BLOCK_D so that they
    share one)."""
    return (pid_d * BLOCK_D) // g.channels_per_group


@triton.jit
def _grouped_ptrs(g, pid_b, group, offs_n):
    """Pointers to position 0 of the N states of one group in batch row pid_b of a `GroupedSeq`."""
    return g.ptr + (pid_b * g.s_batch + group * g.s_group + offs_n * g.s_state)


# Steps: where a step of the scan order lies and what it computes.


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
def _load_at(ptr, stride, t, mask):
    """ptr[t * stride] as float32, 0 where masked: one position's channels (BLOCK_D,) or states (BLOCK_N,)."""
    return tl.load(ptr + t * stride, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_input(u_ptr, su_t, i, L, H, mask_d, REVERSE: tl.constexpr, COLS: tl.constexpr):
    """u at step i of the scan order, float32, zero outside 0 <= i < L (the conv's zero padding)."""
    return _load_at(u_ptr, su_t, _step_position(i, L, H, REVERSE, COLS), mask_d & (i >= 0) & (i < L))


@triton.jit
def _project(u, Wr, wdt, WB, E: tl.constexpr, BLOCK_D: tl.constexpr):
    """PROJ: r = <W_r, u_t>, delta before its bias = w_dt r, and B_t = W_B u_t (BLOCK_N, BLOCK_D) of each
    channel's group."""
    r = _group_sum_1d(u * Wr, E, BLOCK_D)
    return r, wdt * r, _group_sum(u[None, :] * WB, E, BLOCK_D)


@triton.jit
def _dt(dl, bias, mask_d, valid, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta before softplus (bias added) and dt, which is 0 on an invalid step (a pass-through)."""
    if HAS_BIAS:
        dl += bias
    if SOFTPLUS:
        dt = _softplus(dl)
    else:
        dt = dl
    return dl, tl.where(mask_d & valid, dt, 0.0)


@triton.jit
def _conv_silu(u, x1, x2, x3, cw0, cw1, cw2, cw3, cb):
    """The conv's output before SiLU at this step (u: its input; x1, x2, x3: the inputs one, two, three steps
    back), and SiLU of it."""
    pre = cb + cw0 * u + cw1 * x1 + cw2 * x2 + cw3 * x3
    return pre, pre * tl.sigmoid(pre)


# Segments of a split scan: summaries of the earlier (forward) or later (backward) segments.


@triton.jit
def _segment_summary(seg_ptr, pid_b, j, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn):
    """Segment j's summary in seg (batch, n_segs, N + 1, dim) float32: its (N, BLOCK_D) state (or adjoint) and
    its (BLOCK_D,) sum of dt."""
    base = seg_ptr + (pid_b * n_segs + j) * (N + 1) * dim
    x = tl.load(base + offs_n[:, None] * dim + offs_d[None, :], mask=mask_dn, other=0.0)
    dt_sum = tl.load(base + N * dim + offs_d, mask=mask_d, other=0.0)
    return x, dt_sum


@triton.jit
def _store_summary(seg_ptr, x, dt_sum, pid_b, j, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn):
    base = seg_ptr + (pid_b * n_segs + j) * (N + 1) * dim
    tl.store(base + offs_n[:, None] * dim + offs_d[None, :], x, mask=mask_dn)
    tl.store(base + N * dim + offs_d, dt_sum, mask=mask_d)


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
def s6_segment_states_kernel(d, sizes, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr,
                             COLS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Grid (cdiv(dim, BLOCK_D), batch, n_segs - 1): each segment but the last of direction d (a `Direction`,
    not PROJ) scanned from a zero state, its end state and dt sum written to d.summaries for `_entering_state`."""
    pid_d, pid_b, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    dim, L, N, H, seg_len, n_segs = sizes.dim, sizes.L, sizes.N, sizes.H, sizes.seg_len, sizes.n_segs
    offs_d, offs_n, mask_d, mask_n, mask_dn = _tile(pid_d, dim, N, BLOCK_D, BLOCK_N)
    A, A2 = _load_A(d.A, offs_d, offs_n, mask_dn)
    bias, _ = _load_channel_params(d, offs_d, mask_d, HAS_BIAS, False, BLOCK_D)
    B_ptr, sB_t = _grouped_ptrs(d.B, pid_b, _group(d.B, pid_d, BLOCK_D), offs_n), d.B.s_step
    u_ptr, su_t = _seq_ptrs(d.u, pid_b, offs_d), d.u.s_step
    dl_ptr, sdl_t = _seq_ptrs(d.delta, pid_b, offs_d), d.delta.s_step
    h = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dt_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    i0 = pid_s * seg_len
    i1 = tl.minimum(L, i0 + seg_len)
    t_n = _step_position(i0, L, H, REVERSE, COLS)
    u_n = _load_at(u_ptr, su_t, t_n, mask_d)
    dl_n = _load_at(dl_ptr, sdl_t, t_n, mask_d)
    B_n = _load_at(B_ptr, sB_t, t_n, mask_n)[:, None]
    for i in range(i0, i1):
        u, dl, Bt = u_n, dl_n, B_n
        more = i + 1 < i1
        t_n = _step_position(i + 1, L, H, REVERSE, COLS)
        u_n = _load_at(u_ptr, su_t, t_n, mask_d & more)
        dl_n = _load_at(dl_ptr, sdl_t, t_n, mask_d & more)
        B_n = _load_at(B_ptr, sB_t, t_n, mask_n & more)[:, None]
        dl, dt = _dt(dl, bias, mask_d, True, HAS_BIAS, SOFTPLUS)
        h = tl.exp2(dt[None, :] * A2) * h + (dt * u)[None, :] * Bt
        dt_sum += dt
    _store_summary(d.summaries, h, dt_sum, pid_b, pid_s, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn)


@triton.jit
def s6_segment_adjoints_kernel(d, gate, dout, sizes, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                               GATE: tl.constexpr, REVERSE: tl.constexpr, COLS: tl.constexpr, BLOCK_D: tl.constexpr,
                               BLOCK_N: tl.constexpr):
    """Grid (cdiv(dim, BLOCK_D), batch, n_segs - 1): each segment but the first of direction d (a `Direction`,
    not PROJ), its adjoint g_t = C_t dy_t + a_{t+1} g_{t+1} run last step to first from zero, a_first g_first
    and the dt sum written to d.summaries for `_entering_adjoint`. gate: the `Seq` of z (GATE); dout: a `Seq`."""
    pid_d, pid_b, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2) + 1
    dim, L, N, H, seg_len, n_segs = sizes.dim, sizes.L, sizes.N, sizes.H, sizes.seg_len, sizes.n_segs
    offs_d, offs_n, mask_d, mask_n, mask_dn = _tile(pid_d, dim, N, BLOCK_D, BLOCK_N)
    A, A2 = _load_A(d.A, offs_d, offs_n, mask_dn)
    bias, _ = _load_channel_params(d, offs_d, mask_d, HAS_BIAS, False, BLOCK_D)
    C_ptr, sC_t = _grouped_ptrs(d.C, pid_b, _group(d.C, pid_d, BLOCK_D), offs_n), d.C.s_step
    dl_ptr, sdl_t = _seq_ptrs(d.delta, pid_b, offs_d), d.delta.s_step
    if GATE:
        z_ptr, sz_t = _seq_ptrs(gate, pid_b, offs_d), gate.s_step
    dout_ptr, sdo_t = _seq_ptrs(dout, pid_b, offs_d), dout.s_step
    g = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    a_next = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dt_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    i0 = pid_s * seg_len
    i1 = tl.minimum(L, i0 + seg_len)
    t_n = _step_position(i1 - 1, L, H, REVERSE, COLS)
    dl_n = _load_at(dl_ptr, sdl_t, t_n, mask_d)
    C_n = _load_at(C_ptr, sC_t, t_n, mask_n)[:, None]
    do_n = _load_at(dout_ptr, sdo_t, t_n, mask_d)
    if GATE:
        z_n = _load_at(z_ptr, sz_t, t_n, mask_d)
    for k in range(i1 - i0):
        dl, Ct, dy = dl_n, C_n, do_n
        more = k + 1 < i1 - i0
        t_n = _step_position(i1 - 2 - k, L, H, REVERSE, COLS)
        dl_n = _load_at(dl_ptr, sdl_t, t_n, mask_d & more)
        C_n = _load_at(C_ptr, sC_t, t_n, mask_n & more)[:, None]
        do_n = _load_at(dout_ptr, sdo_t, t_n, mask_d & more)
        if GATE:
            zt = z_n
            z_n = _load_at(z_ptr, sz_t, t_n, mask_d & more)
            dy = dy * zt * tl.sigmoid(zt)
        dl, dt = _dt(dl, bias, mask_d, True, HAS_BIAS, SOFTPLUS)
        g = a_next * g + Ct * dy[None, :]
        a_next = tl.exp2(dt[None, :] * A2)
        dt_sum += dt
    _store_summary(d.summaries, a_next * g, dt_sum, pid_b, pid_s, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn)


# One direction, forward and backward; the kernels below run one or two of them per program.


@triton.jit
def _scan_fwd_direction(
    d, gate, out, last, sizes, pid_b, pid_d, pid_s,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, GATE: tl.constexpr,
    REVERSE: tl.constexpr, ACCUMULATE: tl.constexpr, SAVE_STATES: tl.constexpr, STORE_LAST: tl.constexpr,
    COLS: tl.constexpr, PROJ: tl.constexpr, CONV: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):
    """One direction's forward over the steps [pid_s * seg_len, (pid_s + 1) * seg_len) of the scan order (all
    of L when n_segs is 1). d: its `Direction` (states written when SAVE_STATES; summaries: the earlier
    segments', from which the state entering this segment is folded). gate: the `Seq` of z (GATE); out: the
    output `Seq`, which with ACCUMULATE already holds the other direction's output, added before the gate;
    last: (batch, dim, N) float32, the state after the last step (STORE_LAST). With PROJ, A, D and delta_bias
    have E rows, one per place in a group; with CONV, u goes through the conv and SiLU first (neither is split
    into segments). With COLS the L = H * W positions are a row-major grid scanned column by column
    (`_position`); outputs go to the inputs' positions."""
    dim, L, N, H = sizes.dim, sizes.L, sizes.N, sizes.H
    n_chunks, seg_len, n_segs = sizes.n_chunks, sizes.seg_len, sizes.n_segs
    offs_d, offs_n, mask_d, mask_n, mask_dn = _tile(pid_d, dim, N, BLOCK_D, BLOCK_N)
    rows = _param_rows(offs_d, PROJ, E, BLOCK_D)
    A, A2 = _load_A(d.A, rows, offs_n, mask_dn)
    bias, Dv = _load_channel_params(d, rows, mask_d, HAS_BIAS, HAS_D, BLOCK_D)
    if PROJ:
        Wr, wdt, WB, WC = _load_projection(d.proj, N, offs_n, mask_n, E, BLOCK_D)
    if CONV:
        cw0, cw1, cw2, cw3, cb = _load_conv(d.proj, rows, mask_d)
        # The conv's inputs one, two and three steps back. Each loop-carried value starts as its own tensor:
        # the compiler keeps a name whose value after the loop body is the very object it entered with out of
        # the loop's carried values, so `x3 = x2` with x2 and x3 both bound to one zeros tensor would not be
        # carried.
        x1 = tl.zeros((BLOCK_D,), dtype=tl.float32)
        x2 = tl.zeros((BLOCK_D,), dtype=tl.float32)
        x3 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if not PROJ:
        B_ptr, sB_t = _grouped_ptrs(d.B, pid_b, _group(d.B, pid_d, BLOCK_D), offs_n), d.B.s_step
        C_ptr, sC_t = _grouped_ptrs(d.C, pid_b, _group(d.C, pid_d, BLOCK_D), offs_n), d.C.s_step
        dl_ptr, sdl_t = _seq_ptrs(d.delta, pid_b, offs_d), d.delta.s_step
    u_ptr, su_t = _seq_ptrs(d.u, pid_b, offs_d), d.u.s_step
    if GATE:
        z_ptr, sz_t = _seq_ptrs(gate, pid_b, offs_d), gate.s_step
    out_ptr, so_t = _seq_ptrs(out, pid_b, offs_d), out.s_step
    states_ptr = d.states + (pid_b * n_chunks * N + offs_n[:, None]) * dim + offs_d[None, :]
    h = _entering_state(d.summaries, A2, pid_b, pid_s, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn, BLOCK_D,
                        BLOCK_N)
    i0 = pid_s * seg_len
    i1 = tl.minimum(L, i0 + seg_len)
    t_n = _step_position(i0, L, H, REVERSE, COLS)
    u_n = _load_at(u_ptr, su_t, t_n, mask_d)
    if not PROJ:
        dl_n = _load_at(dl_ptr, sdl_t, t_n, mask_d)
        B_n = _load_at(B_ptr, sB_t, t_n, mask_n)[:, None]
        C_n = _load_at(C_ptr, sC_t, t_n, mask_n)[:, None]
    if GATE:
        z_n = _load_at(z_ptr, sz_t, t_n, mask_d)
    if ACCUMULATE:
        o_n = _load_at(out_ptr, so_t, t_n, mask_d)
    for i in range(i0, i1):
        # The next step's loads go out before this step's arithmetic, which then hides their latency.
        t, u = t_n, u_n
        more = i + 1 < i1
        t_n = _step_position(i + 1, L, H, REVERSE, COLS)
        u_n = _load_at(u_ptr, su_t, t_n, mask_d & more)
        if not PROJ:
            dl, Bt, Ct = dl_n, B_n, C_n
            dl_n = _load_at(dl_ptr, sdl_t, t_n, mask_d & more)
            B_n = _load_at(B_ptr, sB_t, t_n, mask_n & more)[:, None]
            C_n = _load_at(C_ptr, sC_t, t_n, mask_n & more)[:, None]
        if GATE:
            zt = z_n
            z_n = _load_at(z_ptr, sz_t, t_n, mask_d & more)
        if ACCUMULATE:
            acc = o_n
            o_n = _load_at(out_ptr, so_t, t_n, mask_d & more)
        if SAVE_STATES:
            tl.store(states_ptr + (i // CHUNK) * N * dim, h, mask=mask_dn & (i % CHUNK == 0))
        if CONV:
            pre, silu = _conv_silu(u, x1, x2, x3, cw0, cw1, cw2, cw3, cb)
            x3 = x2
            x2 = x1
            x1 = u
            u = tl.where(mask_d, silu, 0.0)
        if PROJ:
            r, dl, Bt = _project(u, Wr, wdt, WB, E, BLOCK_D)
            Ct = _group_sum(u[None, :] * WC, E, BLOCK_D)
        dl, dt = _dt(dl, bias, mask_d, True, HAS_BIAS, SOFTPLUS)
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
        tl.store(last + (pid_b * dim + offs_d[None, :]) * N + offs_n[:, None], h, mask=mask_dn & (pid_s == n_segs - 1))


@triton.jit
def _recompute_chunk(
    h, c, u_ptr, su_t, dl_ptr, sdl_t, B_ptr, sB_t, h_ptr, pre_ptr, L, H, mask_d, mask_n,
    A2, bias, Wr, wdt, WB, cw0, cw1, cw2, cw3, cb,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr, COLS: tl.constexpr, PROJ: tl.constexpr,
    CONV: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):
    """Chunk c's states again, from h, the state saved at its start: the state after its k-th step goes to
    h_ptr + k * BLOCK_D * BLOCK_N, and with CONV the conv's output before SiLU to pre_ptr + k * BLOCK_D (the
    program's scratch, which the back pass reads). Loads are issued a step ahead."""
    if CONV:
        x1 = _load_input(u_ptr, su_t, c * CHUNK - 1, L, H, mask_d, REVERSE, COLS)
        x2 = _load_input(u_ptr, su_t, c * CHUNK - 2, L, H, mask_d, REVERSE, COLS)
        x3 = _load_input(u_ptr, su_t, c * CHUNK - 3, L, H, mask_d, REVERSE, COLS)
    t_n = _step_position(c * CHUNK, L, H, REVERSE, COLS)
    first = c * CHUNK < L
    u_n = _load_at(u_ptr, su_t, t_n, mask_d & first)
    if not PROJ:
        dl_n = _load_at(dl_ptr, sdl_t, t_n, mask_d & first)
        B_n = _load_at(B_ptr, sB_t, t_n, mask_n & first)[:, None]
    for k in range(CHUNK):
        i = c * CHUNK + k
        u = u_n
        more = (k + 1 < CHUNK) & (i + 1 < L)
        t_n = _step_position(i + 1, L, H, REVERSE, COLS)
        u_n = _load_at(u_ptr, su_t, t_n, mask_d & more)
        if not PROJ:
            dl, Bt = dl_n, B_n
            dl_n = _load_at(dl_ptr, sdl_t, t_n, mask_d & more)
            B_n = _load_at(B_ptr, sB_t, t_n, mask_n & more)[:, None]
        if CONV:
            pre, silu = _conv_silu(u, x1, x2, x3, cw0, cw1, cw2, cw3, cb)
            x3 = x2
            x2 = x1
            x1 = u
            tl.store(pre_ptr + k * BLOCK_D, pre)
            u = tl.where(mask_d, silu, 0.0)
        if PROJ:
            r, dl, Bt = _project(u, Wr, wdt, WB, E, BLOCK_D)
        dl, dt = _dt(dl, bias, mask_d, i < L, HAS_BIAS, SOFTPLUS)
        h = tl.exp2(dt[None, :] * A2) * h + (dt * u)[None, :] * Bt
        tl.store(h_ptr + k * BLOCK_D * BLOCK_N, h)


@triton.jit
def _gate_backward(dout, zt, h, Ct, u, Dv, dz_other, HAS_D: tl.constexpr, ACCUMULATE: tl.constexpr):
    """Back through out = y silu(z), y = <h_t, C_t> + D u_t: dy, and dz (plus dz_other, the other direction's
    part, with ACCUMULATE)."""
    sig = tl.sigmoid(zt)
    y = tl.sum(h * Ct, axis=0)
    if HAS_D:
        y += Dv * u
    dz = dout * y * sig * (1.0 + zt * (1.0 - sig))
    if ACCUMULATE:
        dz += dz_other
    return dout * zt * sig, dz


@triton.jit
def _adjoint_step(ag, h, Bt, Ct, dy, dt, u, A2):
    """One step back through h_t = a_t h_{t-1} + dt_t u_t B_t, a_t = exp(dt_t A), given ag = a_{t+1} g_{t+1}:
    the adjoint g_t = C_t dy_t + a_{t+1} g_{t+1}, then a_t g_t (what the step before takes), dt_t u_t,
    d(dt A)_t = g_t a_t h_{t-1} = g_t (h_t - dt_t u_t B_t), <g_t, B_t> and the gradient of dt_t (before
    softplus). A2 is A log2(e); <d(dt A), A> is taken as <d(dt A), A2> ln 2, so A itself need not stay live."""
    g = ag + Ct * dy[None, :]
    dtu = dt * u
    ddA = g * (h - dtu[None, :] * Bt)
    gB = tl.sum(g * Bt, axis=0)
    ddt = tl.sum(ddA * A2, axis=0) * 0.6931471805599453 + gB * u
    return g, tl.exp2(dt[None, :] * A2) * g, dtu, ddA, gB, ddt


@triton.jit
def _projection_backward(g, h, dtu, dy, ddt, Wr, wdt, WB, WC, E: tl.constexpr, BLOCK_D: tl.constexpr):
    """Back through delta = w_dt <W_r, u> + bias, B = W_B u and C = W_C u, per group: dB_t and dC_t (BLOCK_N,
    BLOCK_D), dr, and what the three add to du."""
    dBt = _group_sum(g * dtu[None, :], E, BLOCK_D)
    dCt = _group_sum(h * dy[None, :], E, BLOCK_D)
    dr = _group_sum_1d(ddt * wdt, E, BLOCK_D)
    return dBt, dCt, dr, tl.sum(WB * dBt, axis=0) + tl.sum(WC * dCt, axis=0) + dr * Wr


@triton.jit
def _add_chunk_sum(ptr, x, mask, add):
    """ptr[...] = x, or with add ptr[...] + x: a gradient's per-chunk sums are added up in its output, not in
    registers that would stay live through the loops."""
    tl.store(ptr, x + tl.load(ptr, mask=mask & add, other=0.0), mask=mask)


@triton.jit
def _scan_bwd_direction(
    d, grads, gate, dout, dz, scratch, sizes, pid_b, pid_d, pid_s,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, GATE: tl.constexpr,
    REVERSE: tl.constexpr, ACCUMULATE: tl.constexpr, COLS: tl.constexpr, TOKEN_MAJOR: tl.constexpr,
    PROJ: tl.constexpr, CONV: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """Gradients of one direction over segment pid_s of the scan order (see `_scan_fwd_direction`; d.summaries:
    the later segments' adjoint summaries, `s6_segment_adjoints_kernel`) into `grads` (`Gradients`, laid out as
    TOKEN_MAJOR says). dz: contiguous like du; with ACCUMULATE it already holds the other direction's part and
    this one is added to it. scratch: CHUNK * BLOCK_D * BLOCK_N float32 per program (with CONV
    CHUNK * BLOCK_D * (BLOCK_N + 1)). With CONV, du is the gradient of the conv's input."""
    dim, L, N, H = sizes.dim, sizes.L, sizes.N, sizes.H
    n_chunks, seg_len, n_segs = sizes.n_chunks, sizes.seg_len, sizes.n_segs
    offs_d, offs_n, mask_d, mask_n, mask_dn = _tile(pid_d, dim, N, BLOCK_D, BLOCK_N)
    rows = _param_rows(offs_d, PROJ, E, BLOCK_D)
    _, A2 = _load_A(d.A, rows, offs_n, mask_dn)
    bias, Dv = _load_channel_params(d, rows, mask_d, HAS_BIAS, HAS_D, BLOCK_D)
    Wr, wdt, WB, WC = None, None, None, None
    if PROJ:
        Wr, wdt, WB, WC = _load_projection(d.proj, N, offs_n, mask_n, E, BLOCK_D)
    cw0, cw1, cw2, cw3, cb = None, None, None, None, None
    if CONV:
        cw0, cw1, cw2, cw3, cb = _load_conv(d.proj, rows, mask_d)
    if TOKEN_MAJOR:  # position t of the gradients: + t * grad_t, of dB and dC: + t * dbc_t
        grad_offs, grad_t, dbc_n, dbc_t = pid_b * dim * L + offs_d, dim, 1, N
    else:
        grad_offs, grad_t, dbc_n, dbc_t = (pid_b * dim + offs_d) * L, 1, L, 1
    dl_ptr, sdl_t, B_ptr, sB_t = None, None, None, None
    if not PROJ:
        group_B, group_C = _group(d.B, pid_d, BLOCK_D), _group(d.C, pid_d, BLOCK_D)
        B_ptr, sB_t = _grouped_ptrs(d.B, pid_b, group_B, offs_n), d.B.s_step
        C_ptr, sC_t = _grouped_ptrs(d.C, pid_b, group_C, offs_n), d.C.s_step
        dB_ptr = grads.dB + ((pid_b * (dim // d.B.channels_per_group) + group_B) * N * L + offs_n * dbc_n)
        dC_ptr = grads.dC + ((pid_b * (dim // d.C.channels_per_group) + group_C) * N * L + offs_n * dbc_n)
        dl_ptr, sdl_t = _seq_ptrs(d.delta, pid_b, offs_d), d.delta.s_step
        ddl_ptr = grads.ddelta + grad_offs
    u_ptr, su_t = _seq_ptrs(d.u, pid_b, offs_d), d.u.s_step
    if GATE:
        z_ptr, sz_t = _seq_ptrs(gate, pid_b, offs_d), gate.s_step
        dz_ptr = dz + grad_offs
    dout_ptr, sdo_t = _seq_ptrs(dout, pid_b, offs_d), dout.s_step
    du_ptr = grads.du + grad_offs
    states_ptr = d.states + (pid_b * n_chunks * N + offs_n[:, None]) * dim + offs_d[None, :]
    row = pid_b * n_segs + pid_s  # of the per-segment sums and the scratch
    base = (row * tl.num_programs(0) + pid_d) * CHUNK * BLOCK_D
    pre_ptr = None
    if CONV:  # the chunk's conv outputs (before SiLU) follow its states
        base = base * (BLOCK_N + 1)
        pre_ptr = scratch + base + CHUNK * BLOCK_D * BLOCK_N + tl.arange(0, BLOCK_D)
    else:
        base = base * BLOCK_N
    h_ptr = scratch + base + offs_n[:, None] * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
    # a_{t+1} g_{t+1} entering the segment's last step: what the later segments pass in (zero without a split).
    ag = _entering_adjoint(d.summaries, A2, pid_b, pid_s, n_segs, dim, N, offs_d, offs_n, mask_d, mask_dn, BLOCK_D,
                           BLOCK_N)
    dA_ptr = grads.dA + (row * N + offs_n[:, None]) * dim + offs_d[None, :]
    if PROJ:
        dWr_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        dwdt_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        dWB_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
        dWC_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    if CONV:
        # The conv outputs' gradients one, two and three steps ahead: each its own tensor (see
        # `_scan_fwd_direction`).
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
        h = tl.load(states_ptr + c * N * dim, mask=mask_dn, other=0.0)
        _recompute_chunk(h, c, u_ptr, su_t, dl_ptr, sdl_t, B_ptr, sB_t, h_ptr, pre_ptr, L, H, mask_d, mask_n, A2, bias,
                         Wr, wdt, WB, cw0, cw1, cw2, cw3, cb, HAS_BIAS, SOFTPLUS, REVERSE, COLS, PROJ, CONV, E,
                         BLOCK_D, BLOCK_N, CHUNK)
        tl.debug_barrier()
        # Back through the chunk, last step first, again loading a step ahead. dA, dD and d(delta_bias) sum the
        # chunk's terms first, then add that sum to their outputs (`_add_chunk_sum`): a two-level sum keeps their
        # rounding error from growing with L.
        dA_chunk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
        dD_chunk = tl.zeros((BLOCK_D,), dtype=tl.float32)
        dbias_chunk = tl.zeros((BLOCK_D,), dtype=tl.float32)
        i_n = c * CHUNK + CHUNK - 1
        valid_n = i_n < L
        t_n = _step_position(i_n, L, H, REVERSE, COLS)
        u_n = _load_at(u_ptr, su_t, t_n, mask_d & valid_n)
        if not PROJ:
            dl_n = _load_at(dl_ptr, sdl_t, t_n, mask_d & valid_n)
            B_n = _load_at(B_ptr, sB_t, t_n, mask_n & valid_n)[:, None]
            C_n = _load_at(C_ptr, sC_t, t_n, mask_n & valid_n)[:, None]
        do_n = _load_at(dout_ptr, sdo_t, t_n, mask_d & valid_n)
        h_n = tl.load(h_ptr + (CHUNK - 1) * BLOCK_D * BLOCK_N)
        if CONV:
            pre_n = tl.load(pre_ptr + (CHUNK - 1) * BLOCK_D)
        if GATE:
            z_n = _load_at(z_ptr, sz_t, t_n, mask_d & valid_n)
            if ACCUMULATE:
                dz_n = _load_at(dz_ptr, grad_t, t_n, mask_d & valid_n)
        for kk in range(CHUNK):
            k = CHUNK - 1 - kk
            i = c * CHUNK + k
            valid = i < L
            t, u, dout_t, h = t_n, u_n, do_n, h_n
            i_n = i - 1
            more = (kk + 1 < CHUNK) & (i_n < L)
            t_n = _step_position(i_n, L, H, REVERSE, COLS)
            u_n = _load_at(u_ptr, su_t, t_n, mask_d & more)
            if not PROJ:
                dl, Bt, Ct = dl_n, B_n, C_n
                dl_n = _load_at(dl_ptr, sdl_t, t_n, mask_d & more)
                B_n = _load_at(B_ptr, sB_t, t_n, mask_n & more)[:, None]
                C_n = _load_at(C_ptr, sC_t, t_n, mask_n & more)[:, None]
            do_n = _load_at(dout_ptr, sdo_t, t_n, mask_d & more)
            h_n = tl.load(h_ptr + (k - 1) * BLOCK_D * BLOCK_N, mask=mask_dn & more, other=0.0)
            if CONV:
                pre = pre_n
                pre_n = tl.load(pre_ptr + (k - 1) * BLOCK_D, mask=mask_d & more, other=0.0)
                x = u  # the conv's input; u becomes its output after SiLU
                sp = tl.sigmoid(pre)
                u = tl.where(mask_d, pre * sp, 0.0)
            if GATE:
                zt = z_n
                z_n = _load_at(z_ptr, sz_t, t_n, mask_d & more)
                dz_other = None
                if ACCUMULATE:
                    dz_other = dz_n
                    dz_n = _load_at(dz_ptr, grad_t, t_n, mask_d & more)
            if PROJ:
                r, dl, Bt = _project(u, Wr, wdt, WB, E, BLOCK_D)
                Ct = _group_sum(u[None, :] * WC, E, BLOCK_D)
            dl, dt = _dt(dl, bias, mask_d, valid, HAS_BIAS, SOFTPLUS)
            if GATE:
                dy, dz_t = _gate_backward(dout_t, zt, h, Ct, u, Dv, dz_other, HAS_D, ACCUMULATE)
                tl.store(dz_ptr + t * grad_t, dz_t.to(dz_ptr.dtype.element_ty), mask=mask_d & valid)
            else:
                dy = dout_t
            g, ag, dtu, ddA, gB, ddt = _adjoint_step(ag, h, Bt, Ct, dy, dt, u, A2)
            dA_chunk += ddA * dt[None, :]
            du = gB * dt
            if HAS_D:
                du += Dv * dy
                dD_chunk += dy * u
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(dl)
            ddt = tl.where(mask_d & valid, ddt, 0.0)
            dbias_chunk += ddt
            if PROJ:
                dBt, dCt, dr, du_proj = _projection_backward(g, h, dtu, dy, ddt, Wr, wdt, WB, WC, E, BLOCK_D)
                du += du_proj
                dWr_acc += dr * u
                dwdt_acc += ddt * r
                dWB_acc += u[None, :] * dBt
                dWC_acc += u[None, :] * dCt
            else:
                dBt = tl.sum(g * dtu[None, :], axis=1)
                dCt = tl.sum(h * dy[None, :], axis=1)
                tl.store(ddl_ptr + t * grad_t, ddt.to(ddl_ptr.dtype.element_ty), mask=mask_d & valid)
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
            tl.store(du_ptr + t * grad_t, du.to(du_ptr.dtype.element_ty), mask=mask_d & valid)
        _add_chunk_sum(dA_ptr, dA_chunk, mask_dn, j > 0)
        if HAS_D:
            _add_chunk_sum(grads.dD + row * dim + offs_d, dD_chunk, mask_d, j > 0)
        if HAS_BIAS:
            _add_chunk_sum(grads.d_delta_bias + row * dim + offs_d, dbias_chunk, mask_d, j > 0)
        tl.debug_barrier()
    if PROJ:
        w_offs = (row * dim + offs_d) * (1 + 2 * N)
        tl.store(grads.dWx + w_offs, dWr_acc, mask=mask_d)
        tl.store(grads.dWx + w_offs[None, :] + 1 + offs_n[:, None], dWB_acc, mask=mask_dn)
        tl.store(grads.dWx + w_offs[None, :] + 1 + N + offs_n[:, None], dWC_acc, mask=mask_dn)
        tl.store(grads.dw_dt + row * dim + offs_d, dwdt_acc, mask=mask_d)
    if CONV:
        c_offs = (row * dim + offs_d) * 4
        tl.store(grads.d_conv_weight + c_offs, dcw0_acc, mask=mask_d)
        tl.store(grads.d_conv_weight + c_offs + 1, dcw1_acc, mask=mask_d)
        tl.store(grads.d_conv_weight + c_offs + 2, dcw2_acc, mask=mask_d)
        tl.store(grads.d_conv_weight + c_offs + 3, dcw3_acc, mask=mask_d)
        tl.store(grads.d_conv_bias + row * dim + offs_d, dcb_acc, mask=mask_d)


@triton.jit
def s6_fwd_kernel(
    fwd, bwd, gate, out, last, sizes,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr,
    REVERSE: tl.constexpr, BIDIR: tl.constexpr, RUN0: tl.constexpr, RUN1: tl.constexpr, SAVE_STATES: tl.constexpr,
    COLS: tl.constexpr, PROJ: tl.constexpr, CONV: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):
    """Grid (cdiv(dim, BLOCK_D), batch, n_segs). fwd: direction 0's `Direction`, scanned in the order REVERSE
    says; with BIDIR, bwd: direction 1's, scanned last-to-first, its output added to direction 0's before the
    gate. gate: the `Seq` of z (HAS_Z); out: the output `Seq`; last: (batch, dim, N) float32 for a single
    direction's last state (None for a pair); sizes: the `Sizes`. RUN0 / RUN1: which of the two this launch
    runs (a pair split into segments runs them in two launches: direction 1 reads all of direction 0's
    output)."""
    pid_d, pid_b, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if RUN0:
        _scan_fwd_direction(fwd, gate, out, last, sizes, pid_b, pid_d, pid_s, HAS_D, HAS_BIAS, SOFTPLUS,
                            HAS_Z and not BIDIR, REVERSE, False, SAVE_STATES, not BIDIR, COLS, PROJ, CONV, E, BLOCK_D,
                            BLOCK_N, CHUNK)
    if RUN0 and RUN1:
        tl.debug_barrier()  # direction 1 reads the outputs this program's threads just wrote
    if RUN1:
        _scan_fwd_direction(bwd, gate, out, last, sizes, pid_b, pid_d, pid_s, HAS_D, HAS_BIAS, SOFTPLUS, HAS_Z,
                            True, True, SAVE_STATES, False, COLS, PROJ, CONV, E, BLOCK_D, BLOCK_N, CHUNK)


@triton.jit
def s6_bwd_kernel(
    fwd, fwd_grads, bwd, bwd_grads, gate, dout, dz, scratch, sizes,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr,
    REVERSE: tl.constexpr, RUN0: tl.constexpr, RUN1: tl.constexpr, COLS: tl.constexpr, TOKEN_MAJOR: tl.constexpr,
    PROJ: tl.constexpr, CONV: tl.constexpr, E: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """Grid (cdiv(dim, BLOCK_D), batch, n_segs); the gradients of `s6_fwd_kernel` into each direction's
    `Gradients`, direction by direction (RUN0 / RUN1 as there; direction 1 adds its part of dz to direction
    0's). dout: the `Seq` of the output's gradient; dz: z's gradient (HAS_Z); scratch: see
    `_scan_bwd_direction`."""
    pid_d, pid_b, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if RUN0:
        _scan_bwd_direction(fwd, fwd_grads, gate, dout, dz, scratch, sizes, pid_b, pid_d, pid_s, HAS_D, HAS_BIAS,
                            SOFTPLUS, HAS_Z, REVERSE, False, COLS, TOKEN_MAJOR, PROJ, CONV, E, BLOCK_D, BLOCK_N, CHUNK)
    if RUN0 and RUN1:
        tl.debug_barrier()  # direction 1 adds its part to the dz this program's threads just wrote
    if RUN1:
        _scan_bwd_direction(bwd, bwd_grads, gate, dout, dz, scratch, sizes, pid_b, pid_d, pid_s, HAS_D, HAS_BIAS,
                            SOFTPLUS, HAS_Z, True, True, COLS, TOKEN_MAJOR, PROJ, CONV, E, BLOCK_D, BLOCK_N, CHUNK)
