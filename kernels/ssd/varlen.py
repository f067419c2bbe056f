"""Packed variable-length batches for the SSD scan: where sequences start, and each one's final state.

Sequences are packed along L. A new sequence starts at every step whose `seq_idx` differs from the step
before it in scan order (mamba_ssm's convention for nondecreasing ids); the state is zero there, so no
sequence sees another. The initial state, when given, enters the first sequence in scan order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_seq_args(seq_idx, cu_seqlens, return_varlen_states, batch, length, device):
    """Check seq_idx (batch, L) and cu_seqlens (num_seqs + 1,) and return the seq_idx to use: as given, or
    derived from cu_seqlens; ValueError naming the argument otherwise."""
    for name, t, dims in (("seq_idx", seq_idx, "(batch, L)"), ("cu_seqlens", cu_seqlens, "(num_seqs + 1,)")):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name}: expected an integer tensor of shape {dims}, got "
                             f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.device != device:
            raise ValueError(f"{name}: expected device {device} (where x lives), got {t.device}")
    if seq_idx is not None and tuple(seq_idx.shape) != (batch, length):
        raise ValueError(f"seq_idx: expected shape (batch, L) = ({batch}, {length}), got {tuple(seq_idx.shape)}")
    if return_varlen_states and cu_seqlens is None:
        raise ValueError("return_varlen_states: needs cu_seqlens, the (num_seqs + 1,) sequence boundaries")
    if cu_seqlens is None:
        return seq_idx
    if batch != 1:
        raise ValueError(f"cu_seqlens: packed sequences take batch 1 (all sequences along L), got batch {batch}")
    bounds = cu_seqlens.tolist() if cu_seqlens.dim() == 1 else None
    if bounds is None or len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != length:
        raise ValueError(f"cu_seqlens: expected (num_seqs + 1,) boundaries from 0 to L = {length}, got "
                         f"{bounds if bounds is not None else tuple(cu_seqlens.shape)}")
    if any(b >= e for b, e in zip(bounds, bounds[1:])):
        raise ValueError(f"cu_seqlens: expected strictly increasing boundaries (no empty sequence), got {bounds}")
    derived = sequence_of_positions(cu_seqlens, length)
    if seq_idx is not None and not torch.equal(scan_segments(seq_idx, False), derived):
        raise ValueError("seq_idx, cu_seqlens: they place the sequence boundaries differently")
    return derived


def sequence_of_positions(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """(1, L) int32: the index of the sequence each position belongs to."""
    starts = torch.zeros(length, dtype=torch.int32, device=cu_seqlens.device)
    starts[cu_seqlens[1:-1].long()] = 1
    return starts.cumsum(0, dtype=torch.int32)[None]


def scan_segments(seq_idx: torch.Tensor, reverse: bool) -> torch.Tensor:
    """seq_idx (batch, L) -> int32 (batch, L) by position: 0 at the first step of the scan, one more at every
    step whose seq_idx differs from the previous step's (nondecreasing in scan order)."""
    s = seq_idx.flip(1) if reverse else seq_idx
    ids = F.pad((s[:, 1:] != s[:, :-1]).cumsum(1, dtype=torch.int32), (1, 0))
    return ids.flip(1) if reverse else ids


def varlen_states(x, step, A, B, cu_seqlens, entering, chunk: int, reverse: bool) -> torch.Tensor:
    """The state after each packed sequence's last step in scan order, (num_seqs, H, P, N) in sequence order.

    x: (1, L, H, P); step: the processed dt (1, L, H); A: (H,); B: (1, L, G, N), all in the compute dtype;
    entering: the state entering each `chunk`-step chunk of the scan, (chunks, H, P, N). A sequence's state
    is the state entering the chunk of its last step, when the sequence began before that chunk (or is the
    first one, which the initial state enters), decayed to that step, plus the chunk's own steps of it.
    """
    length, heads = step.shape[1], step.shape[2]
    if reverse:
        x, step, B = x.flip(1), step.flip(1), B.flip(1)
        cu_seqlens = length - cu_seqlens.flip(0)
    starts, lasts = cu_seqlens[:-1].long(), cu_seqlens[1:].long() - 1  # scan order
    first = lasts // chunk * chunk  # the first step of each last step's chunk
    idx = first[:, None] + torch.arange(chunk, device=x.device)  # (num_seqs, chunk)
    inside = (idx >= starts[:, None]) & (idx <= lasts[:, None])
    idx = idx.clamp(max=length - 1)
    log_decay = torch.where(inside[..., None], step[0, idx] * A, 0.0)  # (num_seqs, chunk, H)
    cum = log_decay.cumsum(1)
    weight = torch.where(inside[..., None], torch.exp(cum[:, -1:] - cum), 0.0) * step[0, idx]
    Bh = B[0, idx].repeat_interleave(heads // B.shape[2], dim=2)  # (num_seqs, chunk, H, N)
    own = torch.einsum("qth,qthp,qthn->qhpn", weight, x[0, idx], Bh)
    carried = (starts < first) | (starts == 0)
    decay_in = torch.where(carried[:, None], torch.exp(cum[:, -1]), 0.0)  # (num_seqs, H)
    states = own + decay_in[..., None, None] * entering[first // chunk]
    return states.flip(0) if reverse else states
