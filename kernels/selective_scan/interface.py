"""`selective_scan_fn`: the checked, backend-dispatching entry point of the Mamba-1 selective scan."""

from __future__ import annotations

import torch

from .._backend import HAS_TRITON, resolve_backend
from .._checks import check_groups, check_optional, check_tensor, compute_dtype
from .fast import selective_scan_fast
from .low_rank import full_delta

if HAS_TRITON:
    from .triton_op import selective_scan_triton


def _check_bc(name, t, batch, n, length, dim, dev):
    if isinstance(t, torch.Tensor) and t.dim() == 4:
        check_tensor(name, t, "(batch, G, N, L)", (batch, None, n, length), dev)
        check_groups(name, t.shape[1], dim, "dim")
    elif isinstance(t, torch.Tensor) and t.dim() == 2:
        check_tensor(name, t, "(dim, N) (time-invariant)", (dim, n), dev)
    else:
        check_tensor(name, t, "(batch, N, L), (batch, G, N, L) or (dim, N)", (batch, n, length), dev)


# Dtypes, devices and shapes of argument sets that passed `check_selective_scan_args`: a repeated eager call
# (every training step) skips the checks, which cost host time (BENCHMARKS.md). Cleared when it reaches 1024.
# Not used while torch.compile traces: the checks run once in the trace, and a guard on this set would fail.
_PASSED: set = set()


def _signature(args) -> tuple:
    """What the checks read of each argument: a tensor's dtype, device and shape, another value's type."""
    return tuple((a.dtype, a.device, a.shape) if isinstance(a, torch.Tensor) else type(a) for a in args)


def check_selective_scan_args(u, delta, A, B, C, D, z, delta_bias, delta_proj_weight=None):
    """Raise ValueError naming the first argument whose type, dtype, device or shape is wrong."""
    if torch.compiler.is_compiling():
        _check(u, delta, A, B, C, D, z, delta_bias, delta_proj_weight)
        return
    signature = _signature((u, delta, A, B, C, D, z, delta_bias, delta_proj_weight))
    if signature in _PASSED:
        return
    _check(u, delta, A, B, C, D, z, delta_bias, delta_proj_weight)
    if len(_PASSED) >= 1024:
        _PASSED.clear()
    _PASSED.add(signature)


def _check(u, delta, A, B, C, D, z, delta_bias, delta_proj_weight):
    if not isinstance(u, torch.Tensor):
        raise ValueError(f"u: expected a tensor of shape (batch, dim, L), got {type(u).__name__}")
    dev = u.device
    check_tensor("u", u, "(batch, dim, L)", (None, None, None), dev)
    batch, dim, length = u.shape
    if length == 0:
        raise ValueError("u: the sequence length L must be at least 1, got 0")
    if delta_proj_weight is None:
        check_tensor("delta", delta, "(batch, dim, L)", (batch, dim, length), dev)
    else:
        check_tensor("delta_proj_weight", delta_proj_weight, "(dim, rank)", (dim, None), dev)
        check_tensor("delta", delta, "(batch, rank, L) (low-rank, with delta_proj_weight)",
                     (batch, delta_proj_weight.shape[1], length), dev)
    check_tensor("A", A, "(dim, N)", (dim, None), dev)
    n = A.shape[1]
    _check_bc("B", B, batch, n, length, dim, dev)
    _check_bc("C", C, batch, n, length, dim, dev)
    check_optional("D", D, "(dim,)", (dim,), dev)
    check_optional("z", z, "(batch, dim, L)", (batch, dim, length), dev)
    check_optional("delta_bias", delta_bias, "(dim,)", (dim,), dev)


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, *, reverse=False, delta_proj_weight=None, backend="auto"):
    """Mamba-1 selective scan (S6), argument-compatible with mamba_ssm's `selective_scan_fn`.

    u, delta, z: (batch, dim, L); A: (dim, N) real; B, C: (batch, N, L), grouped (batch, G, N, L) with G
    dividing dim, or time-invariant (dim, N); D, delta_bias: (dim,).
    delta += delta_bias, then softplus if `delta_softplus`;
        h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t,   out_t = (<h_t, C_t> + D u_t) * silu(z_t).
    State in float32 (float64 for float64 inputs) whatever the input dtype; out in u's dtype, (batch, dim, L).
    `return_last_state` also returns the final state (batch, dim, N) (not differentiated through).
    `reverse=True` scans from the last position to the first (equal to flipping inputs and output).
    `delta_proj_weight` (dim, rank): delta is given low-rank, (batch, rank, L), and the delta scanned is
    delta_proj_weight @ delta at each position, formed in the op and not saved for the backward
    (`low_rank.full_delta`; what the layers pass, Mamba's dt_proj).
    `backend`: "torch" (the fast PyTorch path), "triton" (the Triton kernels: CUDA tensors, or CPU tensors
    under TRITON_INTERPRET=1; not float64, time-varying B and C only), or "auto" (Triton for CUDA tensors
    that it takes, else "torch").
    """
    check_selective_scan_args(u, delta, A, B, C, D, z, delta_bias, delta_proj_weight)
    invariant = [name for name, t in (("B", B), ("C", C)) if t.dim() == 2]
    if invariant and backend == "triton":
        raise ValueError(f"{invariant[0]}: the Triton kernels take time-varying B and C ((batch, N, L) or "
                         "(batch, G, N, L)); a time-invariant (dim, N) one runs with backend='torch' or 'auto'")
    float64 = compute_dtype(u, delta, A, B, C, D, z, delta_bias, delta_proj_weight) == torch.float64
    if resolve_backend(backend, u, has_kernel=not invariant, float64=float64) == "triton":
        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, reverse,
                                     delta_proj_weight)
    delta = full_delta(delta, delta_proj_weight)
    out = selective_scan_fast(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, reverse)
    if return_last_state:
        return out[0], out[1].detach()
    return out
