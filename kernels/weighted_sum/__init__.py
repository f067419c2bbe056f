"""Weighted sum of equally shaped tensors (MambaMixer's weighted averaging of earlier outputs): the
multiply-add reference and Triton kernels that read each tensor once."""

from .interface import weighted_sum
from .naive import weighted_sum_ref

__all__ = ["weighted_sum", "weighted_sum_ref"]
