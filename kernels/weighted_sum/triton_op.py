"""Launchers and autograd around the Triton weighted-sum kernels."""

from __future__ import annotations

import torch

from .._backend import cdiv, launch_device
from .triton_kernels import GROUP, weighted_sum_bwd_kernel, weighted_sum_fwd_kernel

BLOCK = 1024  # elements per program (4 warps, 8 per thread)
WARPS = 4


def _groups(tensors):
    """The tensors in launches of at most GROUP, each padded to GROUP arguments with its first tensor."""
    for start in range(0, len(tensors), GROUP):
        group = tensors[start:start + GROUP]
        yield start, group, group + [group[0]] * (GROUP - len(group))


def weighted_sum_fwd(weights: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
    """sum_j weights[j] tensors[j] (contiguous, equally shaped), accumulated in float32; the tensors' promoted
    dtype."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    numel = tensors[0].numel()
    # Several launches accumulate in float32 and round once at the end.
    total_dtype = dtype if len(tensors) <= GROUP else torch.float32
    out = torch.empty(tensors[0].shape, dtype=total_dtype, device=tensors[0].device)
    w = weights.detach().to(torch.float32).contiguous()
    with launch_device(out):
        for start, group, args in _groups(tensors):
            weighted_sum_fwd_kernel[(cdiv(numel, BLOCK),)](
                out, w[start:], *args, numel, K=len(group), ACCUMULATE=start > 0, BLOCK=BLOCK, num_warps=WARPS)
    return out.to(dtype)


def weighted_sum_bwd(grad: torch.Tensor, weights: torch.Tensor, tensors: list[torch.Tensor]):
    """(d weights (k,) in weights' dtype, [d tensors[j] = weights[j] grad in tensors[j]'s dtype])."""
    grad = grad.contiguous()
    numel = grad.numel()
    programs = cdiv(numel, BLOCK)
    w = weights.detach().to(torch.float32).contiguous()
    dxs = [torch.empty_like(t) for t in tensors]
    dw = []
    with launch_device(grad):
        for start, group, args in _groups(tensors):
            dx_group = dxs[start:start + GROUP]
            partial = torch.empty(programs, len(group), dtype=torch.float32, device=grad.device)
            weighted_sum_bwd_kernel[(programs,)](
                grad, w[start:], partial, *args, *dx_group, *[dx_group[0]] * (GROUP - len(group)), numel,
                K=len(group), BLOCK=BLOCK, num_warps=WARPS)
            dw.append(partial.sum(0))
    return torch.cat(dw).to(weights.dtype), dxs


class WeightedSum(torch.autograd.Function):
    """Autograd of the Triton weighted sum: forward(weights, *tensors), all tensors contiguous."""

    @staticmethod
    def forward(ctx, weights, *tensors):
        ctx.save_for_backward(weights, *tensors)
        return weighted_sum_fwd(weights, list(tensors))

    @staticmethod
    def backward(ctx, grad):
        weights, *tensors = ctx.saved_tensors
        dw, dxs = weighted_sum_bwd(grad, weights, tensors)
        return dw, *dxs
