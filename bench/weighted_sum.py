"""MambaMixer's weighted averaging on CUDA: the Triton `weighted_sum` against the multiply-add chain
(`weighted_sum_ref`, the path before it), same process.

    python bench/weighted_sum.py --out DIR

At each stage of vim2_tiny at 224 px and the training batch (256; residual stream float32 in stage 1 and
bf16 in stages 2-4, as under bf16 autocast), for the tensor counts of the stage's blocks (2l and 2l + 1 in
block l: the inputs of its token and channel mixers), times forward and forward+backward (gradients of
the weights and every tensor), median of `do_bench_cudagraph`, and sums them over the stage's blocks.
Checks first: float32 against the float64 chain, output and every gradient. Prints a table and writes
DIR/weighted_sum.json.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from cuda_check import weighted_sum_error
from triton.testing import do_bench_cudagraph

from mambamixer.kernels import weighted_sum, weighted_sum_ref

STAGES = [((56, 56, 96), 2, torch.float32), ((28, 28, 192), 2, torch.bfloat16), ((14, 14, 384), 6, torch.bfloat16),
          ((7, 7, 768), 2, torch.bfloat16)]  # grid and dim, depth, stream dtype


def check():
    err = weighted_sum_error(13, (3, 5, 7, 33))
    print(f"{'ok  ' if err < 1e-5 else 'FAIL'} float32 vs float64, 13 tensors: max rel err {err:.1e}", flush=True)
    return err


def time_count(k, shape, dtype, batch):
    weights = torch.randn(k, device="cuda", requires_grad=True)
    tensors = [torch.randn(batch, *shape, device="cuda", dtype=dtype, requires_grad=True) for _ in range(k)]
    grad = torch.randn(batch, *shape, device="cuda", dtype=dtype)
    row = {}
    for name, fn in (("triton", weighted_sum), ("chain", weighted_sum_ref)):
        row[f"{name}_fwd_ms"] = do_bench_cudagraph(lambda fn=fn: fn(weights, tensors), rep=50, return_mode="median")
        row[f"{name}_fwd_bwd_ms"] = do_bench_cudagraph(
            lambda fn=fn: torch.autograd.grad(fn(weights, tensors), [weights, *tensors], grad), rep=50,
            return_mode="median")
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    err = check()
    rows = []
    print("| stage (batch, H, W, dim), dtype | blocks | chain fwd / fwd+bwd ms | triton fwd / fwd+bwd ms "
          "| ratio fwd / fwd+bwd |")
    for stage, (shape, depth, dtype) in enumerate(STAGES, 1):
        total = dict.fromkeys(("triton_fwd_ms", "triton_fwd_bwd_ms", "chain_fwd_ms", "chain_fwd_bwd_ms"), 0.0)
        for k in [c for block in range(1, depth + 1) for c in (2 * block, 2 * block + 1)]:
            for key, ms in time_count(k, shape, dtype, args.batch).items():
                total[key] += ms
            torch.cuda.empty_cache()
        row = dict(stage=stage, shape=(args.batch, *shape), dtype=str(dtype), depth=depth, **total,
                   fwd_ratio=total["triton_fwd_ms"] / total["chain_fwd_ms"],
                   fwd_bwd_ratio=total["triton_fwd_bwd_ms"] / total["chain_fwd_bwd_ms"])
        rows.append(row)
        print(f"| {row['shape']}, {dtype} | {depth} | {total['chain_fwd_ms']:.2f} / {total['chain_fwd_bwd_ms']:.2f} | "
              f"{total['triton_fwd_ms']:.2f} / {total['triton_fwd_bwd_ms']:.2f} | {row['fwd_ratio']:.2f} / "
              f"{row['fwd_bwd_ratio']:.2f} |", flush=True)
    os.makedirs(args.out, exist_ok=True)
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, check_max_rel_err=err)
    with open(os.path.join(args.out, "weighted_sum.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
