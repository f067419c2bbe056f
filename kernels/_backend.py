"""Backend selection for the scan ops."""

from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

BACKENDS = ("auto", "torch", "triton")
HAS_TRITON = importlib.util.find_spec("triton") is not None
# Triton picks the interpreter when a kernel is defined, so this is read once, at import.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: str, x: torch.Tensor, has_kernel: bool, float64: bool = False) -> str:
    """Return "torch" or "triton" for `backend` ("auto" | "torch" | "triton").

    "auto" picks Triton for CUDA tensors when the op has a Triton kernel (and the inputs are not float64),
    else the PyTorch path. "triton" on CPU tensors needs TRITON_INTERPRET=1 set before import.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if (x.is_cuda and has_kernel and HAS_TRITON and not float64) else "torch"
    if backend == "triton":
        if not has_kernel:
            raise ValueError("backend: 'triton' has no kernel for this op yet; use backend='torch' or 'auto'")
        if not HAS_TRITON:
            raise ValueError("backend: 'triton' needs the triton package, which is not installed")
        if float64:
            raise ValueError("backend: 'triton' takes float32, float16 or bfloat16 inputs, got float64; "
                             "use backend='torch'")
        if not (x.is_cuda or INTERPRET):
            raise ValueError(f"backend: 'triton' needs CUDA tensors (got {x.device}), or TRITON_INTERPRET=1 set "
                             "before import to run the kernels on the CPU")
    return backend


def launch_device(t: torch.Tensor):
    """A context that launches kernels on t's GPU (Triton launches on the current device); nothing for CPU
    tensors (the interpreter) or when that GPU is current already (switching costs host time)."""
    if not t.is_cuda or t.device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(t.device)


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for launch grids (plain Python: `triton.cdiv` called from the host costs about 2 us)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (n >= 1), for block sizes, in plain Python like `cdiv`."""
    return 1 << (n - 1).bit_length()
