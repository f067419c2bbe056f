"""mambamixer: MambaMixer selective token and channel mixers, ViM2 and TSM2, on selective-scan kernels."""

__version__ = "0.1.0"

# `import mambamixer` registers the ViM2 models with timm. pytest also imports this file as the package
# named after the checkout's folder (the repository root is the package); registering twice would make
# timm warn, so only the installed name registers.
if __name__ == "mambamixer":
    from .tasks import vision as _vision  # noqa: F401
