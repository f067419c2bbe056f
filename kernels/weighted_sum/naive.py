"""`weighted_sum_ref`: the weighted sum of equally shaped tensors as a chain of PyTorch multiply-adds."""

from __future__ import annotations

import torch


def weighted_sum_ref(weights: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
    """sum_i weights[i] * tensors[i]; weights (k,), tensors k equally shaped tensors -> that shape.

    The weights are cast to the first tensor's dtype; the result takes PyTorch's type promotion. A chain of
    `addcmul` rather than a tensordot over the stacked tensors: no stacked copy, and the backward is
    elementwise work instead of (k, 1) x (1, numel) GEMMs. The test oracle of the Triton kernels, and the
    path on CPU and under `torch.compile` (whose code generator fuses the chain itself).
    """
    weights = weights.to(tensors[0].dtype)
    total = tensors[0] * weights[0]
    for weight, tensor in zip(weights[1:], tensors[1:]):
        total = torch.addcmul(total, tensor, weight)
    return total
