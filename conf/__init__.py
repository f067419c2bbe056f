"""Hydra configs, shipped with the package so an installed `mambamixer-train` can compose them."""
