"""Mamba-1 selective scan (S6): public op, sequential reference, fast PyTorch path, one-step update."""

from .fast import selective_scan_fast
from .interface import selective_scan_fn
from .naive import selective_scan_ref
from .step import selective_state_update

__all__ = ["selective_scan_fn", "selective_scan_ref", "selective_scan_fast", "selective_state_update"]
