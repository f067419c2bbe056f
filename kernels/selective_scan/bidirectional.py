"""`selective_scan_bidirectional_fn`: two scan directions with their own parameters, added, one gate.

    out = (scan(forward) + scan_reversed(backward)) * silu(z)

the bidirectional selective mixer of MambaMixer / Vision Mamba. The Triton backend runs both directions
in one launch and adds them before the gate without flipping any tensor; the PyTorch backend runs the
two scans of `selective_scan_fn`. With `column_grid_height` the positions are an image's tokens and the
pair scans them down the columns (VMamba's vertical cross-scan orders), again without a transposed copy
on the Triton backend.
"""

from __future__ import annotations

import torch

from .._backend import HAS_TRITON, resolve_backend
from .._checks import check_optional, compute_dtype
from .fast import selective_scan_fast
from .interface import check_selective_scan_args
from .low_rank import full_delta

if HAS_TRITON:
    from .triton_op import selective_scan_bidirectional_triton

_NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias", "delta_proj_weight")


def _pair(name, value):
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError(f"{name}: expected a pair (forward direction, backward direction), got {type(value).__name__}")
    return value


def split_directions(names, values, check, a_index):
    """(forward, backward) argument tuples from pairs named `names`, each checked by `check(args)` (its
    ValueError prefixed with the direction), with equal shapes of u (first) and A (at `a_index`)."""
    pairs = [_pair(name, value) for name, value in zip(names, values)]
    forward, backward = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    for which, args in (("forward", forward), ("backward", backward)):
        try:
            check(args)
        except ValueError as err:
            raise ValueError(f"{which} direction: {err}") from None
    if backward[0].shape != forward[0].shape or backward[a_index].shape != forward[a_index].shape:
        raise ValueError(f"u, A: the backward direction's shapes {tuple(backward[0].shape)}, "
                         f"{tuple(backward[a_index].shape)} must equal the forward direction's "
                         f"{tuple(forward[0].shape)}, {tuple(forward[a_index].shape)}")
    return forward, backward


def _columns(t, height):
    """t (..., L), L = height * W positions of a row-major grid, in column-major order."""
    return t.unflatten(-1, (height, -1)).transpose(-1, -2).flatten(-2)


def _rows(t, height):
    """The inverse of `_columns`."""
    return t.unflatten(-1, (-1, height)).transpose(-1, -2).flatten(-2)


def selective_scan_bidirectional_fn(u, delta, A, B, C, D=(None, None), delta_bias=(None, None), *, z=None,
                                    delta_softplus=False, column_grid_height=None, delta_proj_weight=(None, None),
                                    backend="auto"):
    """Each of u, delta, A, B, C, D, delta_bias is a pair (forward direction, backward direction) with the
    shapes of `selective_scan_fn`; the pairs share batch, dim, L and N (B/C groupings may differ). z:
    (batch, dim, L) gates the sum. Returns (batch, dim, L) in u's dtype.

    D, delta_bias and delta_proj_weight are given for both directions or for neither; with delta_proj_weight
    (dim, rank) each delta is low-rank, (batch, rank, L), as in `selective_scan_fn`. column_grid_height: H
    dividing L, to take the L positions as a row-major grid of H rows and scan it column by column (top to
    bottom, then the next column; the backward direction the reverse); inputs and output stay in row-major
    order.
    Inputs stored as (batch, L, dim) (seen as (batch, dim, L) through a transpose) give an output and
    gradients in that layout, which the Triton kernels read and write fastest.
    """
    if (_pair("delta_proj_weight", delta_proj_weight)[0] is None) != (delta_proj_weight[1] is None):
        raise ValueError("delta_proj_weight: give it for both directions or for neither")
    forward, backward = split_directions(_NAMES, (u, delta, A, B, C, D, delta_bias, delta_proj_weight),
                                         lambda a: check_selective_scan_args(*a[:5], a[5], None, a[6], a[7]),
                                         a_index=2)
    for i in (5, 6):
        if (forward[i] is None) != (backward[i] is None):
            raise ValueError(f"{_NAMES[i]}: give it for both directions or for neither")
    check_optional("z", z, "(batch, dim, L)", tuple(forward[0].shape), forward[0].device)
    length = forward[0].shape[2]
    height = column_grid_height
    if height is not None and (isinstance(height, bool) or not isinstance(height, int) or height < 1
                               or length % height):
        raise ValueError(f"column_grid_height: expected a positive int dividing L={length}, got {height!r}")
    float64 = compute_dtype(*forward, *backward, z) == torch.float64
    if resolve_backend(backend, forward[0], has_kernel=True, float64=float64) == "triton":
        return selective_scan_bidirectional_triton(forward[:7], backward[:7], z, delta_softplus, height or 0,
                                                   (forward[7], backward[7]))
    forward, backward = ((a[0], full_delta(a[1], a[7]), *a[2:7]) for a in (forward, backward))
    if height is not None:
        def cols(t):
            return t if t is None or t.dim() < 3 else _columns(t, height)

        forward, backward = (tuple(map(cols, a[:2])) + a[2:3] + tuple(map(cols, a[3:5])) + a[5:]
                             for a in (forward, backward))
        out = selective_scan_bidirectional_fn(*zip(forward, backward), z=cols(z), delta_softplus=delta_softplus,
                                              backend=backend)
        return _rows(out, height)
    y = selective_scan_fast(*forward[:5], D=forward[5], delta_bias=forward[6], delta_softplus=delta_softplus)
    y_rev = selective_scan_fast(*backward[:5], D=backward[5], delta_bias=backward[6], delta_softplus=delta_softplus,
                                reverse=True)
    out = y.float() + y_rev.float() if y.dtype != torch.float64 else y + y_rev
    if z is not None:
        out = out * torch.nn.functional.silu(z.to(out.dtype))
    return out.to(forward[0].dtype)
