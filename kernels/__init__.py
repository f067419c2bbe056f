"""Selective-scan ops, drop-in compatible with mamba_ssm: Mamba-1 S6 and Mamba-2 SSD.

Each op has a sequential reference (`*_ref`, the test oracle), a fast PyTorch path, a one-step update
for streaming, a checked entry point with a `backend` switch and Triton kernels (`backend="triton"`,
picked by "auto" for CUDA tensors); the S6 scan also has a fused two-direction op and its variant with
delta/B/C (and the conv before the scan) computed from u inside the kernels (ViM2's channel mixer). The
PyTorch path of the depthwise conv before a scan is `depthwise_conv1d_silu`. `weighted_sum` (MambaMixer's
weighted averaging of earlier outputs) has a multiply-add reference and Triton kernels.
"""

from .conv import depthwise_conv1d_silu
from .selective_scan import (
    selective_scan_bidirectional_fn,
    selective_scan_fn,
    selective_scan_projected_bidirectional_fn,
    selective_scan_ref,
    selective_state_update,
)
from .ssd import mamba_chunk_scan_combined, mamba_chunk_scan_ref, ssd_state_update
from .weighted_sum import weighted_sum, weighted_sum_ref

__all__ = [
    "depthwise_conv1d_silu",
    "selective_scan_fn",
    "selective_scan_bidirectional_fn",
    "selective_scan_projected_bidirectional_fn",
    "selective_scan_ref",
    "selective_state_update",
    "mamba_chunk_scan_combined",
    "mamba_chunk_scan_ref",
    "ssd_state_update",
    "weighted_sum",
    "weighted_sum_ref",
]
