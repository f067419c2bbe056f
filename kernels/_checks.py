"""Argument checks shared by the scan ops: every failure is a ValueError naming the argument."""

from __future__ import annotations

import torch

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, t, dims: str, shape: tuple, device: torch.device) -> None:
    """Check that `t` is a floating tensor on `device` of `shape` (None entries match any size).

    `dims` spells the expected layout for the message, e.g. "(batch, dim, L)".
    """
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor of shape {dims}, got {type(t).__name__}")
    if t.dtype not in _FLOATS:
        raise ValueError(f"{name}: expected a real floating dtype (float16/bfloat16/float32/float64), got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name}: expected device {device} (where the first input lives), got {t.device}")
    if t.dim() != len(shape) or any(want is not None and got != want for got, want in zip(t.shape, shape)):
        want = ", ".join("?" if s is None else str(s) for s in shape)
        raise ValueError(f"{name}: expected shape {dims} = ({want}), got {tuple(t.shape)}")


def check_pair(names: tuple[str, str], first, second, dims: str, device: torch.device) -> None:
    """Check `second` against `first`, which was checked already: when their shapes differ, neither can be
    told the wrong one, so the message names both."""
    if isinstance(second, torch.Tensor) and second.shape != first.shape:
        raise ValueError(f"{names[0]}, {names[1]}: expected the same shape {dims}, got {tuple(first.shape)} and "
                         f"{tuple(second.shape)}")
    check_tensor(names[1], second, dims, tuple(first.shape), device)


def check_optional(name: str, t, dims: str, shape: tuple, device: torch.device) -> None:
    if t is not None:
        check_tensor(name, t, dims, shape, device)


def check_groups(name: str, groups: int, channels: int, channel_name: str) -> None:
    if groups < 1 or channels % groups != 0:
        raise ValueError(f"{name}: the number of groups ({groups}) must divide {channel_name} ({channels})")


def compute_dtype(*tensors) -> torch.dtype:
    """float64 if any input is float64 (the test oracle's precision), else float32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32
