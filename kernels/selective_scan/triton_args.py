"""What the S6 Triton kernels take, as named groups: a tensor with its strides, one direction's inputs, its
gradients, the sizes. Triton passes these NamedTuples to a kernel as they are (each field specialised like a
plain argument: 1 a constant, multiples of 16 hinted), and the kernels read their fields by name. A field
that a mode does not read may be None."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Seq(NamedTuple):
    """A (batch, channels, L) tensor or view and its strides."""

    ptr: torch.Tensor
    s_batch: int
    s_channel: int
    s_step: int

    @classmethod
    def of(cls, t: torch.Tensor) -> Seq:
        return cls(t, *t.stride())


class GroupedSeq(NamedTuple):
    """B or C, (batch, G, N, L) or (batch, N, L) (one group), with its strides as (batch, G, N, L)'s; each group
    serves dim / G consecutive channels."""

    ptr: torch.Tensor
    s_batch: int
    s_group: int
    s_state: int
    s_step: int
    channels_per_group: int

    @classmethod
    def of(cls, t: torch.Tensor, dim: int) -> GroupedSeq:
        """t (batch, G, N, L), or (batch, N, L) as one group (no view is made: a torch call costs host time)."""
        if t.dim() == 3:
            s_batch, s_state, s_step = t.stride()
            return cls(t, s_batch, 0, s_state, s_step, dim)
        return cls(t, *t.stride(), dim // t.shape[1])


class StateMatrix(NamedTuple):
    """A (channels, N) and its strides."""

    ptr: torch.Tensor
    s_channel: int
    s_state: int


class Projection(NamedTuple):
    """The PROJ mode's weights, contiguous float32: Wx (1 + 2N, E), w_dt (E,), and the optional conv's weight by
    lag (E, 4) and bias (E,)."""

    Wx: torch.Tensor
    w_dt: torch.Tensor
    conv_weight: torch.Tensor | None
    conv_bias: torch.Tensor | None


class Direction(NamedTuple):
    """One direction's inputs for some batch rows, and what the forward saves of it. With PROJ, delta, B and C
    are None (computed from u), A, D and delta_bias have one row per place in a group and `proj` holds the
    weights. states: (batch, n_chunks, N, dim) float32, the state before every CHUNK steps of the scan order
    (written by the forward when gradients are needed, read by the backward). summaries: (batch, n_segs, N + 1,
    dim) float32, the segments' states (forward) or adjoints (backward) and dt sums of a split scan."""

    u: Seq
    delta: Seq | None
    A: StateMatrix
    B: GroupedSeq | None
    C: GroupedSeq | None
    D: torch.Tensor | None
    delta_bias: torch.Tensor | None
    proj: Projection | None
    states: torch.Tensor
    summaries: torch.Tensor


class Gradients(NamedTuple):
    """One direction's gradient buffers for some batch rows. du, ddelta: (batch, dim, L) in the inputs' dtypes,
    contiguous, or (batch, L, dim) for token-major inputs; dB, dC: float32 (batch, G, N, L) (token-major:
    (batch, G, L, N)) added to atomically; dA (batch, n_segs, N, dim), dD, d_delta_bias (batch, n_segs, dim):
    float32 per-segment sums. PROJ (never split; no ddelta, dB, dC): dWx (batch, dim, 1 + 2N), dw_dt (batch,
    dim), and with a conv d_conv_weight (batch, dim, 4) by lag and d_conv_bias (batch, dim), float32
    per-channel sums."""

    du: torch.Tensor
    ddelta: torch.Tensor | None
    dB: torch.Tensor | None
    dC: torch.Tensor | None
    dA: torch.Tensor
    dD: torch.Tensor
    d_delta_bias: torch.Tensor
    dWx: torch.Tensor | None
    dw_dt: torch.Tensor | None
    d_conv_weight: torch.Tensor | None
    d_conv_bias: torch.Tensor | None


class Sizes(NamedTuple):
    """dim channels, L steps, N states; H: rows of the grid a COLS scan walks column by column (1 otherwise);
    n_chunks = cdiv(L, CHUNK); the scan order cut into n_segs segments of seg_len steps."""

    dim: int
    L: int
    N: int
    H: int
    n_chunks: int
    seg_len: int
    n_segs: int
