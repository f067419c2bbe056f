"""Triton kernels of the Mamba-2 SSD scan: one program per (batch row, head), chunks taken in scan order.

Per chunk of T steps (s <= l inside the chunk, cum = running sum of dt * A, xd = x * dt, S0 the state
entering the chunk, (P, N)):
    y_l   = sum_s (C_l . B_s) exp(cum_l - cum_s) xd_s + exp(cum_l) S0 C_l
    S_end = exp(cum_T) S0 + sum_s exp(cum_T - cum_s) xd_s B_s^T
Each line is a few (T, T), (T, N) and (P, N) matrix products on tensor cores (`_mm`, PRECISION picks the
operands' type); the state stays in registers from chunk to chunk. The forward saves S0 of every chunk when
gradients are needed; the backward walks the chunks in reverse carrying dS (the gradient of S_end). Steps
past L are masked to dt = 0 and zero inputs, which adds nothing. REVERSE scans from position L - 1 down to 0.
With HAS_SEQ, packed sequences: seq holds each position's sequence id, nondecreasing in scan order, and every
decay factor that would cross a sequence start is zero (`_chunk_decays`).
"""

import triton
import triton.language as tl


@triton.jit
def _chunk_positions(c, length, T: tl.constexpr, REVERSE: tl.constexpr):
    """Sequence positions of chunk c's T steps in scan order, and which of them exist."""
    idx = c * T + tl.arange(0, T)
    if REVERSE:
        pos = length - 1 - idx
    else:
        pos = idx
    return pos, idx < length


@triton.jit
def _load_chunk(x_base, sx_l, sx_p, dt_base, sdt_l, b_base, sb_l, sb_n, c_base, sc_l, sc_n, pos, valid, offs_p,
                offs_n, mask_p, mask_n, A):
    """dt (T,), x (T, P), B and C (T, N) and cum (T,) of one chunk, float32."""
    dt = tl.load(dt_base + pos * sdt_l, mask=valid, other=0.0)
    x = tl.load(x_base + pos[:, None] * sx_l + offs_p[None, :] * sx_p, mask=valid[:, None] & mask_p[None, :],
                other=0.0).to(tl.float32)
    mask_tn = valid[:, None] & mask_n[None, :]
    Bm = tl.load(b_base + pos[:, None] * sb_l + offs_n[None, :] * sb_n, mask=mask_tn, other=0.0).to(tl.float32)
    Cm = tl.load(c_base + pos[:, None] * sc_l + offs_n[None, :] * sc_n, mask=mask_tn, other=0.0).to(tl.float32)
    cum = tl.cumsum(dt * A, axis=0)
    return dt, x, Bm, Cm, cum


@triton.jit
def _mm(a, b, PRECISION: tl.constexpr):
    """a @ b of float32 tiles, accumulated in float32. PRECISION "tf32" or "tf32x3" multiplies the float32
    operands on TF32 tensor cores (one or three products); "bf16" and "fp16" round both operands to that type."""
    if PRECISION == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif PRECISION == "fp16":
        return tl.dot(a.to(tl.float16), b.to(tl.float16))
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _decay(cum, T: tl.constexpr):
    """(T, T) [l, s] = exp(cum_l - cum_s) for s <= l, else 0."""
    offs = tl.arange(0, T)
    causal = offs[:, None] >= offs[None, :]
    return tl.exp(tl.where(causal, cum[:, None] - cum[None, :], float("-inf")))


@triton.jit
def _chunk_decays(cum, total, c, pos, valid, length, seq_ptr, sseq_b, sseq_l, b, T: tl.constexpr,
                  REVERSE: tl.constexpr, HAS_SEQ: tl.constexpr):
    """The chunk's decay factors: (T, T) between its steps (`_decay`), (T,) from its start to each step and
    from each step to its end, and the scalar over the whole chunk. With HAS_SEQ each is zero where a sequence
    starts in between: steps of different sequences, steps after a start inside the chunk (from the start),
    steps before the chunk's last sequence (to the end)."""
    decay = _decay(cum, T)
    from_start = tl.exp(cum)
    to_end = tl.exp(total - cum)
    whole = tl.exp(total)
    if HAS_SEQ:
        seq_base = seq_ptr + b * sseq_b
        seq = tl.load(seq_base + pos * sseq_l, mask=valid, other=0)
        last = tl.max(tl.where(valid, seq, -1), axis=0)
        seq = tl.where(valid, seq, last)  # steps past L belong to the last sequence
        before = c * T - 1  # the step before the chunk, in scan order; the initial state's sequence is 0
        if REVERSE:
            before = length - 1 - before
        prev = tl.load(seq_base + before * sseq_l, mask=c > 0, other=0)
        decay = tl.where(seq[:, None] == seq[None, :], decay, 0.0)
        from_start = tl.where(seq == prev, from_start, 0.0)
        to_end = tl.where(seq == last, to_end, 0.0)
        whole = tl.where(last == prev, whole, 0.0)
    return decay, from_start, to_end, whole


@triton.jit
def _program(x_ptr, sx_b, sx_h, dt_ptr, sdt_b, sdt_h, b_ptr, sb_b, sb_g, c_ptr, sc_b, sc_g, heads, headdim, n,
             heads_per_group, BP: tl.constexpr, BN: tl.constexpr):
    """This program's batch row b (int64) and head h; lanes over P and N with their masks; the (P, N)
    offsets of a contiguous state; the row's and head's base pointers into x, dt, B and C."""
    pid = tl.program_id(0)
    b = (pid // heads).to(tl.int64)
    h = pid % heads
    g = h // heads_per_group
    offs_p = tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    mask_p = offs_p < headdim
    mask_n = offs_n < n
    pn = offs_p[:, None] * n + offs_n[None, :]
    return (b, h, offs_p, offs_n, mask_p, mask_n, pn, x_ptr + b * sx_b + h * sx_h, dt_ptr + b * sdt_b + h * sdt_h,
            b_ptr + b * sb_b + g * sb_g, c_ptr + b * sc_b + g * sc_g)


@triton.jit
def ssd_fwd_kernel(x_ptr, sx_b, sx_l, sx_h, sx_p, dt_ptr, sdt_b, sdt_l, sdt_h, A_ptr,
                   b_ptr, sb_b, sb_l, sb_g, sb_n, c_ptr, sc_b, sc_l, sc_g, sc_n,
                   seq_ptr, sseq_b, sseq_l,
                   init_ptr, y_ptr, sy_b, sy_l, sy_h, sy_p, states_ptr, final_ptr,
                   length, heads, headdim, n, heads_per_group, chunks,
                   T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, PRECISION: tl.constexpr,
                   HAS_INIT: tl.constexpr, REVERSE: tl.constexpr, SAVE_STATES: tl.constexpr, HAS_SEQ: tl.constexpr):
    """y (batch, L, H, P) float32 without D and gate; with SAVE_STATES, states (batch, chunks, H, P, N) = S0
    of each chunk in scan order; final (batch, H, P, N). initial (batch, H, P, N) and states are contiguous
    float32."""
    b, h, offs_p, offs_n, mask_p, mask_n, pn, x_base, dt_base, b_base, c_base = _program(
        x_ptr, sx_b, sx_h, dt_ptr, sdt_b, sdt_h, b_ptr, sb_b, sb_g, c_ptr, sc_b, sc_g, heads, headdim, n,
        heads_per_group, BP, BN)
    mask_pn = mask_p[:, None] & mask_n[None, :]
    y_base = y_ptr + b * sy_b + h * sy_h
    A = tl.load(A_ptr + h)
    state_off = (b * heads + h) * headdim * n
    if HAS_INIT:
        S = tl.load(init_ptr + state_off + pn, mask=mask_pn, other=0.0)
    else:
        S = tl.zeros((BP, BN), dtype=tl.float32)
    for c in range(chunks):
        pos, valid = _chunk_positions(c, length, T, REVERSE)
        dt, x, Bm, Cm, cum = _load_chunk(x_base, sx_l, sx_p, dt_base, sdt_l, b_base, sb_l, sb_n, c_base, sc_l, sc_n,
                                         pos, valid, offs_p, offs_n, mask_p, mask_n, A)
        total = tl.sum(dt * A, axis=0)
        decay, from_start, to_end, whole = _chunk_decays(cum, total, c, pos, valid, length, seq_ptr, sseq_b, sseq_l,
                                                         b, T, REVERSE, HAS_SEQ)
        if SAVE_STATES:
            tl.store(states_ptr + ((b * chunks + c) * heads + h) * headdim * n + pn, S, mask=mask_pn)
        xd = x * dt[:, None]
        scores = _mm(Cm, tl.trans(Bm), PRECISION) * decay
        y = _mm(scores, xd, PRECISION)
        y += from_start[:, None] * _mm(Cm, tl.trans(S), PRECISION)
        tl.store(y_base + pos[:, None] * sy_l + offs_p[None, :] * sy_p, y, mask=valid[:, None] & mask_p[None, :])
        S = whole * S + _mm(tl.trans(xd * to_end[:, None]), Bm, PRECISION)
    tl.store(final_ptr + state_off + pn, S, mask=mask_pn)


@triton.jit
def ssd_bwd_kernel(x_ptr, sx_b, sx_l, sx_h, sx_p, dt_ptr, sdt_b, sdt_l, sdt_h, A_ptr,
                   b_ptr, sb_b, sb_l, sb_g, sb_n, c_ptr, sc_b, sc_l, sc_g, sc_n,
                   seq_ptr, sseq_b, sseq_l,
                   dy_ptr, sdy_b, sdy_l, sdy_h, sdy_p, states_ptr,
                   dx_ptr, ddt_ptr, dbh_ptr, dch_ptr, da_ptr, dinit_ptr,
                   length, heads, headdim, n, heads_per_group, chunks,
                   T: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, PRECISION: tl.constexpr,
                   HAS_INIT: tl.constexpr, REVERSE: tl.constexpr, HAS_SEQ: tl.constexpr):
    """Gradients from dy (the gradient of y): dx (batch, L, H, P), ddt (batch, L, H), dB and dC per head
    (batch, L, H, N), dA per row (batch, H) and, with HAS_INIT, the initial state's (batch, H, P, N); all
    contiguous float32."""
    b, h, offs_p, offs_n, mask_p, mask_n, pn, x_base, dt_base, b_base, c_base = _program(
        x_ptr, sx_b, sx_h, dt_ptr, sdt_b, sdt_h, b_ptr, sb_b, sb_g, c_ptr, sc_b, sc_g, heads, headdim, n,
        heads_per_group, BP, BN)
    mask_pn = mask_p[:, None] & mask_n[None, :]
    offs_t = tl.arange(0, T)
    dy_base = dy_ptr + b * sdy_b + h * sdy_h
    A = tl.load(A_ptr + h)
    row = b * length * heads + h  # element offset of (b, 0, h) in a contiguous (batch, L, H) tensor
    dS = tl.zeros((BP, BN), dtype=tl.float32)
    dA = 0.0
    for i in range(chunks):
        c = chunks - 1 - i
        pos, valid = _chunk_positions(c, length, T, REVERSE)
        dt, x, Bm, Cm, cum = _load_chunk(x_base, sx_l, sx_p, dt_base, sdt_l, b_base, sb_l, sb_n, c_base, sc_l, sc_n,
                                         pos, valid, offs_p, offs_n, mask_p, mask_n, A)
        mask_tp = valid[:, None] & mask_p[None, :]
        dy = tl.load(dy_base + pos[:, None] * sdy_l + offs_p[None, :] * sdy_p, mask=mask_tp, other=0.0)
        S0 = tl.load(states_ptr + ((b * chunks + c) * heads + h) * headdim * n + pn, mask=mask_pn, other=0.0)
        xd = x * dt[:, None]
        total = tl.sum(dt * A, axis=0)
        decay, from_start, to_end, whole = _chunk_decays(cum, total, c, pos, valid, length, seq_ptr, sseq_b, sseq_l,
                                                         b, T, REVERSE, HAS_SEQ)
        scores = _mm(Cm, tl.trans(Bm), PRECISION) * decay
        dyx = _mm(dy, tl.trans(xd), PRECISION)  # [l, s] = dy_l . xd_s
        w = dyx * decay
        dC = _mm(w, Bm, PRECISION)
        dC += from_start[:, None] * _mm(dy, S0, PRECISION)
        dB = _mm(tl.trans(w), Cm, PRECISION)
        dB += to_end[:, None] * _mm(xd, dS, PRECISION)
        b_ds = _mm(Bm, tl.trans(dS), PRECISION)  # (T, P): dS B_s
        dxd = _mm(tl.trans(scores), dy, PRECISION) + to_end[:, None] * b_ds
        c_s0 = _mm(Cm, tl.trans(S0), PRECISION)  # (T, P): S0 C_l
        # d cum: the intra-chunk products move cum_l up and cum_s down; the state terms add theirs.
        gsc = dyx * scores
        into_end = to_end * tl.sum(xd * b_ds, axis=1)
        dcum = tl.sum(gsc, axis=1) - tl.sum(gsc, axis=0) + from_start * tl.sum(dy * c_s0, axis=1) - into_end
        last = whole * tl.sum(tl.sum(dS * S0, axis=1), axis=0) + tl.sum(into_end, axis=0)
        dcum += tl.where(offs_t == T - 1, last, 0.0)
        da = tl.sum(dcum, axis=0) - tl.cumsum(dcum, axis=0) + dcum  # cum_t sums a_r over r <= t
        dA += tl.sum(da * dt, axis=0)
        ddt = da * A + tl.sum(dxd * x, axis=1)
        tl.store(ddt_ptr + row + pos * heads, ddt, mask=valid)
        tp = (row + pos[:, None] * heads) * headdim + offs_p[None, :]
        tl.store(dx_ptr + tp, dxd * dt[:, None], mask=mask_tp)
        tn = (row + pos[:, None] * heads) * n + offs_n[None, :]
        mask_tn = valid[:, None] & mask_n[None, :]
        tl.store(dbh_ptr + tn, dB, mask=mask_tn)
        tl.store(dch_ptr + tn, dC, mask=mask_tn)
        dS = whole * dS + _mm(tl.trans(dy * from_start[:, None]), Cm, PRECISION)
    tl.store(da_ptr + b * heads + h, dA)
    if HAS_INIT:
        tl.store(dinit_ptr + (b * heads + h) * headdim * n + pn, dS, mask=mask_pn)
