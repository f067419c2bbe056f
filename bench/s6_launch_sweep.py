"""The S6 kernels at vim2_tiny's training shapes (batch 256, 224 px) for launch options, on CUDA.

    python bench/s6_launch_sweep.py --out DIR [--batch 256] [--maxnreg 0,168,128]

For each register cap of the backward kernel (`maxnreg`, 0 = the compiler's choice) times, at each stage
of vim2_tiny, the token mixer's fused pair in row order (`s6_vim2_sweep.py`'s inputs, BLOCK_D 32, CHUNK
32, and CHUNK 16 without a cap) and the channel mixer's projected op (`channel_mixer.py`'s inputs),
forward+backward, median of `do_bench_cudagraph`. The backward holds about 240 registers per thread,
which lets 8 one-warp programs share an SM; a cap trades spills for more resident programs. Prints a
table, writes DIR/s6_launch_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from channel_mixer import timers as channel_timers
from s6_vim2_sweep import NAMES, direction
from triton.testing import do_bench_cudagraph

from mambamixer.kernels import selective_scan_bidirectional_fn
from mambamixer.kernels.selective_scan import triton_op

STAGES = [(192, 3136, 96), (384, 784, 192), (768, 196, 384), (1536, 49, 768)]  # token d_inner, L, channels


class CappedKernel:
    """Launches `kernel` with maxnreg added (when the cap is nonzero)."""

    def __init__(self, kernel):
        self.kernel, self.cap = kernel, 0

    def __getitem__(self, grid):
        launch = self.kernel[grid]
        return (lambda *a, **kw: launch(*a, **kw, maxnreg=self.cap)) if self.cap else launch


def token_pair(batch, dim, length):
    g = torch.Generator(device="cuda").manual_seed(0)
    pair = [direction(batch, dim, length, 16, g) for _ in range(2)]
    z = torch.randn(batch, length, dim, device="cuda", dtype=torch.bfloat16).mT
    leaves = [d[k].requires_grad_(True) for d in pair for k in NAMES] + [z.requires_grad_(True)]
    dout = torch.randn_like(z)

    def both():
        out = selective_scan_bidirectional_fn(*[(pair[0][k], pair[1][k]) for k in NAMES], z=z, delta_softplus=True)
        torch.autograd.grad(out, leaves, dout)

    return both


def bench(fn):
    return do_bench_cudagraph(fn, rep=100, return_mode="median")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--maxnreg", type=lambda s: [int(v) for v in s.split(",")], default=[0, 168, 128])
    args = parser.parse_args()
    capped = CappedKernel(triton_op.s6_bwd_kernel)
    triton_op.s6_bwd_kernel = capped
    default_sizes = triton_op.block_sizes
    rows = []
    print("| stage | op | maxnreg | fwd+bwd ms |")
    for stage, (dim, length, channels) in enumerate(STAGES, 1):
        ops = {"token pair, CHUNK 32": token_pair(args.batch, dim, length),
               "channel mixer": channel_timers(args.batch, length, channels)["projected"][1]}
        for cap in args.maxnreg:
            capped.cap = cap
            for name, fn in ops.items():
                row = dict(stage=stage, shape=(args.batch, dim, length), op=name, maxnreg=cap, fwd_bwd_ms=bench(fn))
                rows.append(row)
                print(f"| {stage} | {name} | {cap or '-'} | {row['fwd_bwd_ms']:.3f} |", flush=True)
            if cap:
                continue
            triton_op.block_sizes = lambda *a: (32, 16, 16, 1)
            try:
                row = dict(stage=stage, shape=(args.batch, dim, length), op="token pair, CHUNK 16", maxnreg=cap,
                           fwd_bwd_ms=bench(ops["token pair, CHUNK 32"]))
            finally:
                triton_op.block_sizes = default_sizes
            rows.append(row)
            print(f"| {stage} | {row['op']} | {cap or '-'} | {row['fwd_bwd_ms']:.3f} |", flush=True)
        del ops
        torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, batch=args.batch)
    with open(os.path.join(args.out, "s6_launch_sweep.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
