"""The S6 kernels at vim2_tiny's training shapes (batch 256, 224 px) for launch options, on CUDA.

    python bench/s6_launch_sweep.py --out DIR [--batch 256] [--maxnreg 0,200,168]

For each register cap of the token mixer's backward (`triton_op.BWD_MAX_REGISTERS`, 0 = the compiler's
choice) times, at each stage of vim2_tiny, the token mixer's fused pair in row order (`s6_vim2_sweep.py`'s
inputs, BLOCK_D 32, CHUNK 32, and CHUNK 16 at the default cap), and once the channel mixer's projected op
(`channel_mixer.py`'s inputs; its backward is never capped), forward+backward, median of
`do_bench_cudagraph`. Fewer registers per thread let more one-warp programs share an SM (8 at 255, 10 at
200, 12 at 168); below what the kernel needs, the cap costs spills. Prints a table, writes
DIR/s6_launch_sweep.json.
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
    parser.add_argument("--maxnreg", type=lambda s: [int(v) for v in s.split(",")], default=[0, 200, 168])
    args = parser.parse_args()
    default_sizes, default_cap = triton_op.block_sizes, triton_op.BWD_MAX_REGISTERS
    rows = []
    print("| stage | op | maxnreg | fwd+bwd ms |")

    def record(stage, shape, op, cap, fn):
        rows.append(dict(stage=stage, shape=shape, op=op, maxnreg=cap, fwd_bwd_ms=bench(fn)))
        print(f"| {stage} | {op} | {cap or '-'} | {rows[-1]['fwd_bwd_ms']:.3f} |", flush=True)

    for stage, (dim, length, channels) in enumerate(STAGES, 1):
        shape = (args.batch, dim, length)
        record(stage, shape, "channel mixer", None, channel_timers(args.batch, length, channels)["projected"][1])
        token = token_pair(args.batch, dim, length)
        try:
            for cap in args.maxnreg:
                triton_op.BWD_MAX_REGISTERS = cap or None
                record(stage, shape, "token pair, CHUNK 32", cap, token)
            triton_op.BWD_MAX_REGISTERS = default_cap
            triton_op.block_sizes = lambda *a: (32, 16, 16, 1)
            record(stage, shape, "token pair, CHUNK 16", default_cap, token)
        finally:
            triton_op.block_sizes, triton_op.BWD_MAX_REGISTERS = default_sizes, default_cap
        del token
        torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, batch=args.batch)
    with open(os.path.join(args.out, "s6_launch_sweep.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
