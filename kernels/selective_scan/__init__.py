"""Mamba-1 selective scan (S6): public op, sequential reference, parallel PyTorch path, one-step update."""

from .interface import selective_scan_fn
from .naive import selective_scan_ref
from .parallel import selective_scan_parallel
from .step import selective_state_update

__all__ = ["selective_scan_fn", "selective_scan_ref", "selective_scan_parallel", "selective_state_update"]
