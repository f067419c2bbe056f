"""Block-size sweep of the Triton S6 fused pair at ViM2's token-mixer shapes, on CUDA.

    python bench/s6_vim2_sweep.py --out DIR [--max-registers 0,224,200,168]

vim2_tiny at 224 px, batch 64: each stage's cross-scan runs the fused bidirectional op over
(batch, 2 * dim, H * W) with N = 16 and B/C shared by all channels, once in row order and once down the
columns (`column_grid_height`). The inputs are laid out as `CrossScanSSM` makes them: u, delta, z stored
(batch, H * W, channels), B and C views of a (batch, H * W, dt_rank + 2N) projection. Times forward and
forward+backward (bf16 u, delta, z, B, C; z, D, delta_bias, softplus) for each (BLOCK_D, CHUNK,
num_warps), median of `do_bench_cudagraph`, the configuration `block_sizes` picks marked. With
--max-registers, the picked configuration only, for each cap on the backward's registers per thread
(`triton_op.BWD_MAX_REGISTERS`; 0: the compiler's choice). Prints a table and writes DIR/s6_vim2_sweep.json
(DIR/s6_vim2_registers.json with --max-registers).
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


def time_shape(batch, dim, length, cols, caps):
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

    default, default_cap, rows = triton_op.block_sizes, triton_op.BWD_MAX_REGISTERS, []
    picked = default(dim, length, 16, ())
    configs = ([(c, default_cap) for c in CONFIGS] if caps is None
               else [((picked[0], picked[2], picked[3]), cap) for cap in caps])
    for (block_d, chunk, warps), cap in configs:
        triton_op.block_sizes = lambda *a, c=(block_d, chunk, warps): (c[0], 16, c[1], c[2])
        triton_op.BWD_MAX_REGISTERS = cap
        try:
            f = do_bench_cudagraph(fwd, rep=50, return_mode="median")
            fb = do_bench_cudagraph(both, rep=50, return_mode="median")
        finally:
            triton_op.block_sizes, triton_op.BWD_MAX_REGISTERS = default, default_cap
        row = dict(batch=batch, dim=dim, length=length, order="columns" if cols else "rows", block_d=block_d,
                   chunk=chunk, warps=warps, max_registers=cap, fwd_ms=f, fwd_bwd_ms=fb,
                   default=(block_d, 16, chunk, warps) == picked and cap == default_cap)
        rows.append(row)
        print(f"| {(batch, dim, length)} | {row['order']} | {block_d} | {chunk} | {warps} | {cap} | {f:.3f} | "
              f"{fb:.3f} |{' default' if row['default'] else ''}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-registers", type=lambda s: [int(c) or None for c in s.split(",")])
    args = parser.parse_args()
    print("| batch, dim, L | order | BLOCK_D | CHUNK | warps | max registers | fwd ms | fwd+bwd ms |")
    rows = [row for shape in SHAPES for cols in (False, True)
            for row in time_shape(*shape, cols, args.max_registers)]
    os.makedirs(args.out, exist_ok=True)
    name = "s6_vim2_sweep.json" if args.max_registers is None else "s6_vim2_registers.json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                       rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
