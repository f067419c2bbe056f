"""`weighted_sum`: the checked, backend-dispatching weighted sum of equally shaped tensors."""

from __future__ import annotations

import torch

from .._backend import HAS_TRITON, resolve_backend
from .naive import weighted_sum_ref

if HAS_TRITON:
    from .triton_op import WeightedSum


def check_weighted_sum_args(weights, tensors) -> None:
    """Raise ValueError naming the first argument whose type, shape, dtype or device is wrong."""
    if not isinstance(tensors, (list, tuple)) or not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ValueError(f"tensors: expected a non-empty list of tensors, got {type(tensors).__name__}"
                         + (" (empty)" if isinstance(tensors, (list, tuple)) and not tensors else ""))
    first = tensors[0]
    for i, t in enumerate(tensors):
        if not t.is_floating_point():
            raise ValueError(f"tensors[{i}]: expected a floating dtype, got {t.dtype}")
        if t.shape != first.shape or t.device != first.device:
            raise ValueError(f"tensors[{i}]: expected shape {tuple(first.shape)} on {first.device} (as tensors[0]), "
                             f"got {tuple(t.shape)} on {t.device}")
    if not isinstance(weights, torch.Tensor) or weights.shape != (len(tensors),) or not weights.is_floating_point():
        got = f"{tuple(weights.shape)} {weights.dtype}" if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"weights: expected a floating tensor of shape ({len(tensors)},), one weight per tensor, "
                         f"got {got}")
    if weights.device != first.device:
        raise ValueError(f"weights: expected device {first.device} (where the tensors live), got {weights.device}")


def weighted_sum(weights: torch.Tensor, tensors: list[torch.Tensor], backend: str = "auto") -> torch.Tensor:
    """sum_i weights[i] * tensors[i]: weights (k,), tensors k equally shaped tensors -> that shape.

    Differentiable in the weights and every tensor; the result takes the tensors' promoted dtype.
    `backend`: "triton" (one read of each tensor and one write, accumulated in float32; CUDA tensors, or
    CPU tensors under TRITON_INTERPRET=1; not float64; non-contiguous tensors are copied first), "torch"
    (`weighted_sum_ref`, a chain of multiply-adds) or "auto" (Triton for CUDA tensors). Under
    `torch.compile` every backend runs the chain, which the compiler fuses itself (as do empty tensors).
    """
    check_weighted_sum_args(weights, tensors)
    float64 = any(t.dtype == torch.float64 for t in (weights, *tensors))
    use_kernels = resolve_backend(backend, tensors[0], has_kernel=True, float64=float64) == "triton"
    if use_kernels and tensors[0].numel() and not torch.compiler.is_compiling():
        return WeightedSum.apply(weights, *(t.contiguous() for t in tensors))
    return weighted_sum_ref(weights, list(tensors))
