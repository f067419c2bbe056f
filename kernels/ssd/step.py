"""One-step recurrent update of the Mamba-2 SSD scan, for streaming inference: the multi-head selective
state update with A and dt tied over each head's channels."""

from __future__ import annotations

from .._checks import check_groups, check_optional, check_pair, check_tensor, compute_dtype
from ..selective_scan.step import selective_state_update
from .common import process_dt


def ssd_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                     dt_limit=(0.0, float("inf")), *, backend="auto"):
    """Advance `state` by one step in place and return that step's output.

    state: (batch, H, P, N) in any floating dtype (kept; the step computes in float32), updated in place;
    x, z: (batch, H, P); dt: (batch, H); A, dt_bias: (H,); B, C: (batch, G, N); D: (H,) or (H, P).
    Returns out (batch, H, P) in x's dtype. Running it over t = 0..L-1 equals `mamba_chunk_scan_combined`
    on the whole sequence. `backend` as in `selective_state_update`.
    """
    dev = state.device
    check_tensor("state", state, "(batch, H, P, N)", (None, None, None, None), dev)
    batch, heads, p, n = state.shape
    check_tensor("x", x, "(batch, H, P)", (batch, heads, p), dev)
    check_tensor("dt", dt, "(batch, H)", (batch, heads), dev)
    check_tensor("A", A, "(H,)", (heads,), dev)
    check_tensor("B", B, "(batch, G, N)", (batch, None, n), dev)
    check_groups("B", B.shape[1], heads, "H")
    check_pair(("B", "C"), B, C, "(batch, G, N)", dev)
    if D is not None:
        check_tensor("D", D, "(H,) or (H, P)", (heads,) if D.dim() == 1 else (heads, p), dev)
    check_optional("z", z, "(batch, H, P)", (batch, heads, p), dev)
    check_optional("dt_bias", dt_bias, "(H,)", (heads,), dev)
    if dt_limit[0] > 0.0 or dt_limit[1] < float("inf"):  # the clamp comes after the softplus: apply both here
        dt = process_dt(dt, dt_bias, dt_softplus, dt_limit, compute_dtype(dt, dt_bias))
        dt_bias, dt_softplus = None, False
    per_channel = (heads, p)
    return selective_state_update(
        state, x, dt[..., None].expand(batch, *per_channel), A[:, None, None].expand(heads, p, n), B, C,
        D if D is None or D.dim() == 2 else D[:, None].expand(per_channel), z,
        None if dt_bias is None else dt_bias[:, None].expand(per_channel), dt_softplus, backend=backend)
