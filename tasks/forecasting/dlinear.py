"""DLinear baseline (Zeng et al., "Are Transformers Effective for Time Series Forecasting?", AAAI 2023)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DLinear(nn.Module):
    """(batch, seq_len, n_vars) -> (batch, pred_len, n_vars): a moving-average trend and the remainder,
    each mapped over time by one linear layer shared by all variates."""

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_covariates: int = 0, kernel_size: int = 25):
        super().__init__()
        if n_covariates:
            raise ValueError("n_covariates: DLinear takes no covariates; set data.time_features=false")
        self.kernel_size, self.n_vars = kernel_size, n_vars
        self.trend = nn.Linear(seq_len, pred_len)
        self.remainder = nn.Linear(seq_len, pred_len)

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        series = x.transpose(1, 2)  # (batch, n_vars, seq_len)
        half = (self.kernel_size - 1) // 2
        padded = F.pad(series, (self.kernel_size - 1 - half, half), mode="replicate")
        trend = F.avg_pool1d(padded, self.kernel_size, stride=1)
        return (self.trend(trend) + self.remainder(series - trend)).transpose(1, 2)
