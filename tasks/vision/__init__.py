"""Image classification: ViM2 models (registered with timm on import), data and the Lightning module."""

from . import vim2  # noqa: F401  (registers vim2_tiny, vim2_small, vim2_base with timm)
