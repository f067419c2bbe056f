"""mambamixer: MambaMixer selective token and channel mixers, ViM2 and TSM2, on selective-scan kernels."""

__version__ = "0.1.0"
