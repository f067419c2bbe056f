"""Parallel prefix scan of a first-order linear recurrence in plain PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t along the last dimension, h_{-1} = 0; a, b: (..., L) -> h: (..., L).

    Hillis-Steele doubling: ceil(log2 L) elementwise passes instead of a Python loop over L, composing
    the affine maps (a, b) pairwise. Only products of the a's are formed (no division by a running
    product), so decays near zero stay exact. Differentiable through autograd.
    """
    length = a.shape[-1]
    shift = 1
    while shift < length:
        b = b + a * F.pad(b[..., :-shift], (shift, 0))
        if 2 * shift < length:
            a = a * F.pad(a[..., :-shift], (shift, 0), value=1.0)
        shift *= 2
    return b
