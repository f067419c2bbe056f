"""Mamba-1 selective scan (S6): public ops (one direction; a fused pair of directions, also with delta/B/C
projected in the kernels), the sequential reference, the fast PyTorch path, the Triton kernels and the
one-step update."""

from .bidirectional import selective_scan_bidirectional_fn
from .fast import selective_scan_fast
from .interface import selective_scan_fn
from .naive import selective_scan_ref
from .projected import selective_scan_projected_bidirectional_fn
from .step import selective_state_update

__all__ = [
    "selective_scan_fn",
    "selective_scan_bidirectional_fn",
    "selective_scan_projected_bidirectional_fn",
    "selective_scan_ref",
    "selective_scan_fast",
    "selective_state_update",
]
