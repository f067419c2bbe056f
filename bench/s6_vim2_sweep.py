"""Block-size sweep of the Triton S6 fused pair at ViM2's token-mixer shapes, on CUDA.

    python bench/s6_vim2_sweep.py --out DIR

vim2_tiny at 224 px, batch 64: each stage's cross-scan runs the fused bidirectional op over
(batch, 2 * dim, H * W) with N = 16 and B/C shared by all channels, once in row order and once down the
columns (`column_grid_height`). The inputs are laid out as `CrossScanSSM` makes them: u, delta, z stored
(batch, H * W, channels), B and C views of a (batch, H * W, dt_rank + 2N) projection. Times forward and
forward+backward (bf16 u, delta, z, B, C; z, D, delta_bias, softplus) for each (BLOCK_D, CHUNK,
num_warps), median of `do_bench_cudagraph`, the configuration `block_sizes` picks marked. Prints a table
and writes DIR/s6_vim2_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import triton
from triton.testing import do_bench_cudagraph

from mambamixer.kernels import selective_scan_bidirectional_fn
from mambamixer.kernels.selective_scan import triton_op

NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")
SHAPES = [(64, 192, 3136), (64, 384, 784), (64, 768, 196), (64, 1536, 49)]
CONFIGS = [(8, 32, 1), (16, 32, 1), (32, 32, 1), (32, 16, 1), (32, 64, 1), (64, 32, 2)]


def direction(batch, dim, length, n, g):
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    dt = torch.exp(torch.rand(dim, device="cuda", generator=g) * 4.6 - 6.9)
    rank = dim // 32  # the dt_rank of a token mixer at d_inner = dim
    proj = r(batch, length, rank + 2 * n).bfloat16()
    return dict(u=r(batch, length, dim).bfloat16().mT, delta=(0.5 * r(batch, length, dim)).bfloat16().mT,
                A=-torch.arange(1, n + 1, device="cuda").float().repeat(dim, 1), B=proj[..., rank:rank + n].mT,
                C=proj[..., rank + n:].mT, D=r(dim), delta_bias=dt + torch.log(-torch.expm1(-dt)))


def time_shape(batch, dim, length, cols):
    g = torch.Generator(device="cuda").manual_seed(0)
    pair = [direction(batch, dim, length, 16, g) for _ in range(2)]
    z = torch.randn(batch, length, dim, device="cuda", dtype=torch.bfloat16).mT
    leaves = [d[k].requires_grad_(True) for d in pair for k in NAMES] + [z.requires_grad_(True)]
    dout = torch.randn_like(z)
    height = round(length**0.5) if cols else None

    def fwd():
        return selective_scan_bidirectional_fn(*[(pair[0][k], pair[1][k]) for k in NAMES], z=z, delta_softplus=True,
                                               column_grid_height=height)

    def both():
        torch.autograd.grad(fwd(), leaves, dout)

    default, rows = triton_op.block_sizes, []
    picked = default(dim, length, 16, ())
    for block_d, chunk, warps in CONFIGS:
        triton_op.block_sizes = lambda *a, c=(block_d, chunk, warps): (c[0], 16, c[1], c[2])
        try:
            f = do_bench_cudagraph(fwd, rep=50, return_mode="median")
            fb = do_bench_cudagraph(both, rep=50, return_mode="median")
        finally:
            triton_op.block_sizes = default
        row = dict(batch=batch, dim=dim, length=length, order="columns" if cols else "rows", block_d=block_d,
                   chunk=chunk, warps=warps, fwd_ms=f, fwd_bwd_ms=fb, default=(block_d, 16, chunk, warps) == picked)
        rows.append(row)
        print(f"| {(batch, dim, length)} | {row['order']} | {block_d} | {chunk} | {warps} | {f:.3f} | {fb:.3f} |"
              f"{' default' if row['default'] else ''}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    print("| batch, dim, L | order | BLOCK_D | CHUNK | warps | fwd ms | fwd+bwd ms |")
    rows = [row for shape in SHAPES for cols in (False, True) for row in time_shape(*shape, cols)]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "s6_vim2_sweep.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                       rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
