"""Time-series forecasting: TSM2 and a DLinear baseline, CSV benchmark data, the Lightning module."""
