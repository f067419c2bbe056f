"""Backend selection for the scan ops."""

from __future__ import annotations

import torch

BACKENDS = ("auto", "torch", "triton")


def resolve_backend(backend: str, x: torch.Tensor, triton_available: bool) -> str:
    """Return "torch" or "triton" for `backend` ("auto" | "torch" | "triton").

    "auto" picks Triton for CUDA tensors when the op has a Triton kernel, else the PyTorch path.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if (x.is_cuda and triton_available) else "torch"
    if backend == "triton" and not triton_available:
        raise ValueError("backend: 'triton' has no kernel for this op yet; use backend='torch' or 'auto'")
    return backend
