"""Mamba-2 SSD scan: public op, sequential reference, chunked PyTorch path, Triton kernels, one-step update."""

from .chunked import mamba_chunk_scan_chunked
from .interface import mamba_chunk_scan_combined
from .naive import mamba_chunk_scan_ref
from .step import ssd_state_update

__all__ = ["mamba_chunk_scan_combined", "mamba_chunk_scan_ref", "mamba_chunk_scan_chunked", "ssd_state_update"]
