"""Triton kernels of the weighted sum: up to GROUP tensors per launch, read once each.

The forward adds w_j x_j for its tensors to a float32 running total (read from `out` when ACCUMULATE),
so k tensors cost k reads and one write instead of the three passes per term of a multiply-add chain. The
backward reads the output gradient g once per group and writes dx_j = w_j g, and each program stores its
partial sums <g, x_j> for the weights' gradients. Tensors are contiguous and flat; each program owns
BLOCK elements. The tensors are separate arguments (each may have its own dtype), picked at compile time.
"""

from __future__ import annotations

import triton
import triton.language as tl

GROUP = 8  # tensor arguments per launch


@triton.jit
def _pick(j: tl.constexpr, p0, p1, p2, p3, p4, p5, p6, p7):
    """The j-th of eight pointer arguments (j known at compile time)."""
    if j == 0:
        p = p0
    elif j == 1:
        p = p1
    elif j == 2:
        p = p2
    elif j == 3:
        p = p3
    elif j == 4:
        p = p4
    elif j == 5:
        p = p5
    elif j == 6:
        p = p6
    else:
        p = p7
    return p


@triton.jit
def weighted_sum_fwd_kernel(out_ptr, w_ptr, x0, x1, x2, x3, x4, x5, x6, x7, numel,
                            K: tl.constexpr, ACCUMULATE: tl.constexpr, BLOCK: tl.constexpr):
    """out[:numel] (+)= sum_{j<K} w[j] x_j, accumulated in float32. Grid (cdiv(numel, BLOCK),)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    if ACCUMULATE:
        total = tl.load(out_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        total = tl.zeros((BLOCK,), dtype=tl.float32)
    for j in tl.static_range(K):
        x = tl.load(_pick(j, x0, x1, x2, x3, x4, x5, x6, x7) + offs, mask=mask, other=0.0).to(tl.float32)
        total += tl.load(w_ptr + j).to(tl.float32) * x
    tl.store(out_ptr + offs, total.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def weighted_sum_bwd_kernel(g_ptr, w_ptr, dw_ptr, x0, x1, x2, x3, x4, x5, x6, x7,
                            dx0, dx1, dx2, dx3, dx4, dx5, dx6, dx7, numel, K: tl.constexpr, BLOCK: tl.constexpr):
    """dx_j = w[j] g for j < K, and dw (programs, K) float32 partial sums of <g, x_j>. Grid (cdiv(numel, BLOCK),)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    for j in tl.static_range(K):
        x = tl.load(_pick(j, x0, x1, x2, x3, x4, x5, x6, x7) + offs, mask=mask, other=0.0).to(tl.float32)
        dx_ptr = _pick(j, dx0, dx1, dx2, dx3, dx4, dx5, dx6, dx7)
        tl.store(dx_ptr + offs, (tl.load(w_ptr + j).to(tl.float32) * g).to(dx_ptr.dtype.element_ty), mask=mask)
        tl.store(dw_ptr + tl.program_id(0) * K + j, tl.sum(g * x, axis=0))
