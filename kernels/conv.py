"""`depthwise_conv1d_silu`: SiLU of a depthwise conv1d as K shifted multiply-adds (the PyTorch path of the
convs before the S6 scans)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def depthwise_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          padding: tuple[int, int]) -> torch.Tensor:
    """x (..., C, L), weight (C, K), bias (C,) or None, padding (left, right) with left + right = K - 1 ->
    silu(conv1d(x)) (..., C, L) in x's dtype.

    Shifted multiply-adds instead of `F.conv1d`: on CUDA, PyTorch's depthwise conv kernel is slow for
    hundreds of thousands of rows of a few channels (ViM2's channel mixer: ~8 ms per weight gradient, a
    quarter of a training step); this form is memory-bound and as fast on CPU.
    """
    length = x.shape[-1]
    padded, weight = F.pad(x, padding), weight.to(x.dtype)
    y = weight[:, 0, None] * padded[..., :length]
    for k in range(1, weight.shape[1]):
        y = y + weight[:, k, None] * padded[..., k:k + length]
    return F.silu(y if bias is None else y + bias.to(x.dtype)[:, None])
