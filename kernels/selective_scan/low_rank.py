"""delta from a low-rank projection (Mamba's dt_proj), formed where the scan needs it and never saved.

Mamba forms delta = W dt at every position from dt of rank r (dim / 16 by default): the (batch, dim, L)
delta is as large as u, while dt and W are small. Given `delta_proj_weight`, the scan ops take dt as
`delta` and form the full delta themselves, in the forward and again in the backward, so that it is not kept
between them (mamba_ssm's `mamba_inner_fn` with checkpoint_lvl=1 recomputes delta in its backward too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def full_delta(delta: torch.Tensor | None, weight: torch.Tensor | None) -> torch.Tensor | None:
    """delta itself without a weight; with weight (dim, r), the (batch, dim, L) delta of a low-rank delta
    (batch, r, L): weight @ delta at each position, in delta's dtype (the dtype autocast would run the
    projection in), stored (batch, L, dim) as a layer's projections store it."""
    if weight is None or delta is None:
        return delta
    with torch.autocast(delta.device.type, enabled=False):
        return F.linear(delta.mT, weight.to(delta.dtype)).mT


def low_rank_grads(ddelta: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor,
                   token_major: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the full delta, ddelta (batch, dim, L), taken back to the low-rank delta (batch, r, L)
    and to weight (dim, r), in their dtypes; the first stored (batch, L, r) when token_major."""
    w = weight.to(ddelta.dtype)
    low = delta.to(ddelta.dtype)
    with torch.autocast(ddelta.device.type, enabled=False):
        if token_major:  # ddelta.mT is a contiguous (batch, L, dim)
            d_low = (ddelta.mT @ w).mT
            d_weight = ddelta.mT.reshape(-1, w.shape[0]).T @ low.mT.reshape(-1, w.shape[1])
        else:
            d_low = w.T @ ddelta
            d_weight = (ddelta @ low.mT).sum(0)
    return d_low.to(delta.dtype), d_weight.to(weight.dtype)
