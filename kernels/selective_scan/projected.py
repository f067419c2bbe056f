"""`selective_scan_projected_bidirectional_fn`: the fused pair of S6 directions with delta, B and C
projected from u itself, in groups of e channels (ViM2's channel-wise selective mixer).

For each group of e consecutive channels of u (one token's features) and each step t, with v_t = its e
values and x_weight = (W_r; W_B; W_C) of shape (1 + 2N, e) (Mamba's x_proj with dt_rank 1):
    delta = softplus(dt_weight * <W_r, v_t> + dt_bias),   B_t = W_B v_t,   C_t = W_C v_t   (shared by the group)
then `selective_scan_bidirectional_fn` with delta_softplus. With a conv, u is first taken through each
direction's causal depthwise conv (along its own scan order) and SiLU. The Triton backend computes the
conv, delta, B and C in the kernels (forward and backward) so no (batch, groups, N, L) tensor and no
convolved copy of u is formed (for e a power of two and up to 4 conv taps; otherwise it forms them and runs
the generic fused kernel); the PyTorch path forms them and runs the two scans.
"""

from __future__ import annotations

import torch

from .._backend import HAS_TRITON, resolve_backend
from .._checks import check_optional, check_tensor, compute_dtype
from ..conv import depthwise_conv1d_silu
from .bidirectional import selective_scan_bidirectional_fn, split_directions

if HAS_TRITON:
    from .triton_op import selective_scan_projected_triton

_NAMES = ("u", "A", "x_weight", "dt_weight", "dt_bias", "D", "conv_weight", "conv_bias")


def _check(args, z):
    u = args[0]
    if not isinstance(u, torch.Tensor):
        raise ValueError(f"u: expected a tensor of shape (batch, groups * e, L), got {type(u).__name__}")
    check_tensor("u", u, "(batch, groups * e, L)", (None, None, None), u.device)
    A = args[1]
    check_tensor("A", A, "(e, N)", (None, None), u.device)
    e, n = A.shape
    if u.shape[1] % e or u.shape[2] == 0:
        raise ValueError(f"u: expected (batch, groups * e, L) with e={e} (A's rows) dividing the channels and "
                         f"L >= 1, got {tuple(u.shape)}")
    check_tensor("x_weight", args[2], "(1 + 2N, e)", (1 + 2 * n, e), u.device)
    for name, t in zip(_NAMES[3:6], args[3:6]):
        check_tensor(name, t, "(e,)", (e,), u.device)
    check_tensor("z", z, "(batch, groups * e, L)", tuple(u.shape), u.device)
    weight, bias = args[6:]
    if weight is None and bias is not None:
        raise ValueError("conv_bias: given without conv_weight")
    if weight is not None:
        check_tensor("conv_weight", weight, "(e, K)", (e, None), u.device)
        if weight.shape[1] < 1:
            raise ValueError(f"conv_weight: expected at least one tap, got shape {tuple(weight.shape)}")
    check_optional("conv_bias", bias, "(e,)", (e,), u.device)


def _conv_silu(u, weight, bias, reverse):
    """SiLU of the direction's causal depthwise conv along L, the same (e, K) taps for every group: the
    forward direction's output t sees u_{t-K+1..t}, the backward direction's u_{t..t+K-1}."""
    if weight is None:
        return u
    e, k = weight.shape
    padding = (0, k - 1) if reverse else (k - 1, 0)
    return depthwise_conv1d_silu(u.unflatten(1, (-1, e)), weight, bias, padding).flatten(1, 2)


def _explicit(u, A, x_weight, dt_weight, dt_bias, D):
    """The direction's (u, delta, A, B, C, D, delta_bias) for the generic scan: B/C grouped per e channels."""
    batch, dim, length = u.shape
    e = A.shape[0]
    v = u.unflatten(1, (dim // e, e))  # (batch, groups, e, L)
    proj = torch.einsum("kj,bgjl->bgkl", x_weight.to(v.dtype), v)  # (batch, groups, 1 + 2N, L)
    n = A.shape[1]
    delta = (dt_weight.to(v.dtype)[:, None] * proj[:, :, :1]).reshape(batch, dim, length)
    groups = dim // e
    return (u, delta, A.repeat(groups, 1), proj[:, :, 1:1 + n], proj[:, :, 1 + n:], D.repeat(groups),
            dt_bias.repeat(groups))


def selective_scan_projected_bidirectional_fn(u, A, x_weight, dt_weight, dt_bias, D, *, z, conv_weight=(None, None),
                                              conv_bias=(None, None), backend="auto"):
    """Each of u, A, x_weight, dt_weight, dt_bias, D, conv_weight, conv_bias is a pair (forward direction,
    backward direction).

    u: (batch, groups * e, L) with each group's e channels consecutive; A: (e, N); x_weight: (1 + 2N, e);
    dt_weight, dt_bias, D: (e,); z: (batch, groups * e, L). conv_weight (e, K) and conv_bias (e,) (or None):
    a direction's scan input is then silu(conv(u)) with a causal depthwise conv along its own scan order
    (`nn.Conv1d(e, e, K, groups=e)`'s weight squeezed, padded by K - 1 on the side the direction starts
    from). Returns (scan(forward) + scan_reversed(backward)) * silu(z), (batch, groups * e, L) in u's dtype.
    """
    forward, backward = split_directions(_NAMES, (u, A, x_weight, dt_weight, dt_bias, D, conv_weight, conv_bias),
                                         lambda a: _check(a, z), a_index=1)
    if (forward[6] is None) != (backward[6] is None):
        raise ValueError("conv_weight: expected a conv in both directions or in neither")
    e = forward[1].shape[0]
    float64 = compute_dtype(*forward, *backward, z) == torch.float64
    backend = resolve_backend(backend, forward[0], has_kernel=True, float64=float64)
    # (not max(..., default=1): torch 2.11's dynamo breaks the graph on max's default keyword)
    taps = 1 if forward[6] is None else max(forward[6].shape[1], backward[6].shape[1])
    if backend == "triton" and e & (e - 1) == 0 and taps <= 4:
        return selective_scan_projected_triton(forward[:6], backward[:6], z, (*forward[6:], *backward[6:]))
    explicit = [_explicit(_conv_silu(args[0], *args[6:], reverse), *args[1:6])
                for args, reverse in ((forward, False), (backward, True))]
    return selective_scan_bidirectional_fn(*zip(*explicit), z=z, delta_softplus=True, backend=backend)
